"""Real-browser runs of the app in `streamlit run`, driven by headless Chromium.

1. The calculator: a new user keeps LLaVA-1.5-7B, types 1:4:1 and sees budget-matched ranks 8:32:8; then a
   bad ratio shows a one-line error naming the field.
2. The whole loop on the demo model: calculator -> "Train this allocation" -> a 2-job sweep queued from the
   launch form and run by the detached background worker -> Compare (verdict, best adapter) -> "Publish this
   adapter" -> a push to a local Hub-compatible server, with the token typed into the password field and
   found nowhere afterwards.
Screenshots land in test-artifacts/ for a human look.

Every wait is on state (the server's port, text on the page, rows in the job store) with the one last-resort
bound `tests.helpers.jobscript.PATIENCE`: on a loaded machine a Streamlit rerun or a demo training step takes many times
longer than on a quiet one, and the test must still pass.
"""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.jobscript import PATIENCE, wait_for

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (make test installs it as root)"),
]
UI = int(min(PATIENCE, 180) * 1000)  # ms: a page slower than 3 min to show something is broken, not busy
"""Playwright's bound (ms) for what the page should show: it polls the page, so only a hung app reaches it"""
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(folder: Path, env: dict):
    port = _free_port()
    log = open(folder / "server.log", "w")  # noqa: SIM115 - closed by the caller's teardown
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address",
         "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
    )

    def listening() -> bool:
        assert proc.poll() is None, f"streamlit exited with {proc.returncode}: {(folder / 'server.log').read_text()}"
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            return False

    wait_for(listening, what="the Streamlit server to listen", interval=0.3)
    return f"http://127.0.0.1:{port}", proc, log


def _launch_form_for_demo(page, url: str) -> None:
    """As a new user: the calculator, the demo model at 1:4:1 and rank 8, "Train this allocation", then the launch
    form set to 1 seed, 4 steps and 16 evaluation questions."""
    import re

    from playwright.sync_api import expect

    page.goto(url)
    expect(page.get_by_text("Budget calculator").first).to_be_visible(timeout=UI)
    page.locator("div[data-testid='stSelectbox']").filter(has_text="Model").first.click()
    page.get_by_role("option", name=re.compile(r"^demo — ")).click()  # not demo-projector
    expect(page.get_by_text("7.28:29:7.3").first).to_be_visible(timeout=UI)  # demo, 1:4:1 at rank 8 (mean ranks)
    page.get_by_text("Train this allocation").click()
    expect(page.get_by_text("Launch a sweep")).to_be_visible(timeout=UI)
    for label, value in (("Seeds", "1"), ("Steps", "4"), ("Eval questions (0 = all)", "16")):
        box = page.get_by_role("spinbutton", name=label, exact=True)
        box.fill(value)
        box.press("Enter")
        expect(box).to_have_value(value, timeout=UI)


def _stop(store, proc, log) -> None:
    """Kill the detached workers the app started (their process groups) and stop the Streamlit server."""
    from toolkit.queue.lifecycle import live_workers

    for w in live_workers(store):
        try:
            os.killpg(w["pid"], 9)
        except (ProcessLookupError, PermissionError):
            pass
    proc.terminate()
    proc.wait(PATIENCE)
    log.close()


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    url, proc, log = _serve(tmp_path_factory.mktemp("streamlit"), {**os.environ, "HF_HUB_OFFLINE": "1"})
    yield url
    proc.terminate()
    proc.wait(PATIENCE)
    log.close()


def test_calculator_main_flow(app_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1400})
        page.set_default_timeout(UI)  # clicks and fills wait for the element as long as expect does
        expect.set_options(timeout=UI)
        page.goto(app_url)
        expect(page.get_by_text("Budget calculator").first).to_be_visible(timeout=UI)
        ratio = page.get_by_role("textbox", name="Ratio vision : projector : language")
        ratio.fill("2:4:1")
        ratio.press("Enter")
        expect(page.get_by_text("13.8:27.6:6.91").first).to_be_visible(timeout=UI)  # mean ranks, mixed rounding
        ratio.fill("1:4:1")
        ratio.press("Enter")
        expect(page.get_by_text("7.89:31.6:7.89").first).to_be_visible(timeout=UI)
        expect(page.get_by_text("+0.01%").first).to_be_visible()  # budget-exact (uniform 8:32:8 is +1.36 %)
        # the number inputs follow the text box
        expect(page.get_by_role("spinbutton", name="projector", exact=True)).to_have_value("4.00")
        page.screenshot(path=str(artifacts / "calculator.png"), full_page=True)
        ratio.fill("1:-1:2")
        ratio.press("Enter")
        # Streamlit renders ">=" as "≥"; the field name and the value are what matter
        expect(page.get_by_text("ratio: the projector weight must be a number")).to_be_visible(timeout=UI)
        expect(page.get_by_text("got -1.0")).to_be_visible()
        page.screenshot(path=str(artifacts / "calculator-error.png"))
        browser.close()


def test_whole_loop_train_compare_publish(tmp_path, hub):
    """Calculator -> sweep of 2 real demo trainings by the background worker -> Compare -> Publish (local Hub)."""
    import re

    from playwright.sync_api import expect, sync_playwright

    from toolkit.queue.store import JobStore

    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    jobs, adapters = tmp_path / "jobs", tmp_path / "adapters"
    env = {**os.environ, "CMBA_JOBS_DIR": str(jobs), "CMBA_ADAPTERS_DIR": str(adapters), "HF_ENDPOINT": hub.url,
           "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(tmp_path / "hf-home")}
    env.pop("HF_TOKEN", None)
    env.pop("HF_HUB_OFFLINE", None)
    url, proc, log = _serve(tmp_path, env)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1400})
            page.set_default_timeout(UI)  # clicks and fills wait for the element as long as expect does
            expect.set_options(timeout=UI)
            _launch_form_for_demo(page, url)
            # 1:1:1, the calculator's 1:4:1, and the base model's reference evaluation
            expect(page.get_by_text("3 job(s)")).to_be_visible(timeout=UI)
            store = JobStore(jobs)
            # One click: the page queues through the button's callback, which a rerun of the 2-s jobs panel
            # racing the click cannot drop (a plain `if st.button(...)` lost such clicks here).
            page.get_by_role("button", name="Queue sweep").click()
            wait_for(lambda: len(store.list()) >= 3, what="the one click to queue the plan it showed")
            assert [j.name for j in store.list()] == ["demo-r1-1-1-b8-s0", "demo-r1-4-1-b8-s0", "demo-base-reference"]
            expect(page.get_by_text(re.compile("Queued 3 job"))).to_be_visible(timeout=UI)

            def all_succeeded() -> bool:
                rows = store.list()
                assert not any(j.state.value in ("failed", "cancelled") for j in rows), [(j.name, j.message) for j in rows]
                return all(j.state.value == "succeeded" for j in rows)

            wait_for(all_succeeded, what="the background worker to run the three jobs", interval=1)
            expect(page.get_by_text(re.compile(r"Sweep [0-9a-f]{8}: 3 succeeded"))).to_be_visible(timeout=UI)
            page.screenshot(path=str(artifacts / "loop-1-jobs.png"), full_page=True)

            page.get_by_role("link", name="Compare").click()
            expect(page.get_by_text(re.compile("Verdict")).first).to_be_visible(timeout=UI)
            page.screenshot(path=str(artifacts / "loop-2-compare.png"), full_page=True)
            page.get_by_role("button", name="Publish this adapter").click()

            expect(page.get_by_role("heading", name="Publish to the Hub")).to_be_visible(timeout=UI)
            expect(page.get_by_text("validation split, subset of 16 questions").first).to_be_visible(timeout=UI)
            repo = page.get_by_role("textbox", name="Repo id")
            repo.fill("alice/cmba-demo-e2e")
            repo.press("Enter")
            token = page.get_by_role("textbox", name="Hugging Face token")
            assert token.get_attribute("type") == "password"
            token.fill(hub.write_token)
            token.press("Enter")
            page.get_by_role("button", name="Push to the Hub").click()
            expect(page.get_by_text(re.compile("Published .*alice/cmba-demo-e2e"))).to_be_visible(timeout=UI)
            page.screenshot(path=str(artifacts / "loop-3-published.png"), full_page=True)
            assert hub.write_token not in page.inner_text("body")  # (the password field itself holds it, unshown)
            browser.close()
        files = hub.files("alice/cmba-demo-e2e")
        assert {"adapter_model.safetensors", "adapter_config.json", "README.md", "cmba.json"} <= set(files)
        for path in tmp_path.rglob("*"):  # job logs, adapters, cards, the server log: never the token
            if path.is_file() and not path.is_relative_to(tmp_path / "hf-home"):
                assert hub.write_token.encode() not in path.read_bytes(), path
    finally:
        _stop(JobStore(jobs), proc, log)


def test_designed_study_from_queueing_to_its_confirmed_answer(tmp_path):
    """A designed study as a new user runs it from the app (issue #27): the calculator's "Train this allocation" ->
    a simplex-lattice:2 design with successive halving, packed, queued with one click -> the background worker
    trains the pack, decides its rungs inside it and queues the confirmation (fresh seeds, the report split) ->
    the Study page follows it: provisional (publishing disabled) while any job is unfinished, then the answer the
    confirmation gave, at 1280 and 1920 px. A 4-step study cannot show a real effect: the answer it must reach is
    the confirmation's (confirmed or not confirmed), whatever it says."""
    import re

    from playwright.sync_api import expect, sync_playwright

    from toolkit.queue.store import JobStore
    from toolkit.study import halving

    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    jobs, adapters = tmp_path / "jobs", tmp_path / "adapters"
    env = {**os.environ, "CMBA_JOBS_DIR": str(jobs), "CMBA_ADAPTERS_DIR": str(adapters), "HF_HUB_OFFLINE": "1"}
    url, proc, log = _serve(tmp_path, env)
    store = JobStore(jobs)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.set_default_timeout(UI)
            expect.set_options(timeout=UI)
            _launch_form_for_demo(page, url)
            page.get_by_text("Designed study over the simplex").click()
            design = page.get_by_role("textbox", name="Design")
            design.fill("simplex-lattice:2")
            design.press("Enter")
            expect(page.get_by_role("textbox", name="Rungs (steps)")).to_have_value("1,2,4")
            page.get_by_text("Pack the arms: one job trains").first.click()
            # one pack of the design's 6 feasible arms and the calculator's 1:4:1, and the base reference
            expect(page.get_by_text("2 job(s)").first).to_be_visible(timeout=UI)
            page.get_by_role("button", name="Queue sweep").click()
            wait_for(lambda: len(store.list()) == 2, what="the one click to queue the study")
            study = store.list()[0].sweep_id
            page.screenshot(path=str(artifacts / "study-1-queued.png"), full_page=True)

            def confirmation() -> str | None:
                rows = store.list()
                assert not any(j.state.value in ("failed", "cancelled") for j in rows), [(j.name, j.message) for j in rows]
                conf = (halving.status(store, study) or {}).get("confirmation") or {}
                assert "error" not in conf and "skipped" not in conf, conf  # a candidate, so a confirmation
                return conf.get("sweep")

            conf_sweep = wait_for(confirmation, what="the pack to decide its rungs and queue the confirmation",
                                  interval=1)
            page.get_by_role("link", name="Study").click()
            expect(page.get_by_role("heading", name="Study", exact=True)).to_be_visible(timeout=UI)
            if any(not j.state.finished for j in store.list(sweep=conf_sweep)):  # usually still training here
                expect(page.get_by_text(re.compile("Provisional")).first).to_be_visible(timeout=UI)
                assert page.get_by_role("button", name="Publish the confirmed adapter").is_disabled()
                page.screenshot(path=str(artifacts / "study-2-provisional.png"), full_page=True)

            def finished() -> bool:
                rows = store.list()
                assert not any(j.state.value in ("failed", "cancelled") for j in rows), [(j.name, j.message) for j in rows]
                return len(rows) == 4 and all(j.state.value == "succeeded" for j in rows)

            wait_for(finished, what="the study and its confirmation to finish", interval=1)
            answer = page.get_by_text(re.compile(r"^Answer: (confirmed: use|not confirmed:) "))
            expect(answer).to_be_visible(timeout=UI)
            text = answer.inner_text()
            assert "over 1:1:1 on fresh seeds" in text and "synthetic-shapes__test__n16" in text, text
            expect(page.get_by_text("Provisional")).to_have_count(0)
            # the rungs the pack decided, the design, and the recommendation's interval: finite, in points
            expect(page.get_by_text(re.compile(r"Successive halving · rungs 1, 2, 4 steps"))).to_be_visible()
            picked = page.locator("div[data-testid='stSelectbox']").first.aria_snapshot()
            assert "simplex-lattice:2" in picked and "running" not in picked, picked  # no stale counts in the label
            body = page.inner_text("body")
            assert not re.search(r"\d{7,}\.\d\d", body), "an absurd number on the Study page"
            page.screenshot(path=str(artifacts / "study-3-answer-1280.png"), full_page=True)
            page.set_viewport_size({"width": 1920, "height": 1200})
            expect(answer).to_be_visible()
            page.screenshot(path=str(artifacts / "study-3-answer-1920.png"), full_page=True)
            publish = page.get_by_role("button", name="Publish the confirmed adapter")
            assert publish.is_enabled() == text.startswith("Answer: confirmed"), text
            browser.close()
    finally:
        _stop(store, proc, log)
