"""One real-browser run of the main flow: the app in `streamlit run`, driven by headless Chromium.

A new user opens the app, keeps LLaVA-1.5-7B, types 1:4:1 and sees budget-matched ranks 8:32:8; then a bad
ratio shows a one-line error naming the field. The screenshot lands in test-artifacts/ for a human look.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (make test installs it as root)"),
]
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    port = _free_port()
    log = open(tmp_path_factory.mktemp("streamlit") / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address",
         "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            break
        except OSError:
            time.sleep(0.3)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)
    log.close()


def test_calculator_main_flow(app_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1400})
        page.goto(app_url)
        expect(page.get_by_text("Budget calculator").first).to_be_visible(timeout=60_000)
        ratio = page.get_by_role("textbox", name="Ratio vision : projector : language")
        ratio.fill("2:4:1")
        ratio.press("Enter")
        expect(page.get_by_text("14:28:7")).to_be_visible(timeout=30_000)
        ratio.fill("1:4:1")
        ratio.press("Enter")
        expect(page.get_by_text("8:32:8").first).to_be_visible(timeout=30_000)
        expect(page.get_by_text("+1.36%")).to_be_visible()
        # the number inputs follow the text box
        expect(page.get_by_role("spinbutton", name="projector", exact=True)).to_have_value("4.00")
        page.screenshot(path=str(artifacts / "calculator.png"), full_page=True)
        ratio.fill("1:-1:2")
        ratio.press("Enter")
        # Streamlit renders ">=" as "≥"; the field name and the value are what matter
        expect(page.get_by_text("ratio: the projector weight must be a number")).to_be_visible(timeout=30_000)
        expect(page.get_by_text("got -1.0")).to_be_visible()
        page.screenshot(path=str(artifacts / "calculator-error.png"))
        browser.close()
