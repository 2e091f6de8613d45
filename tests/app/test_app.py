"""AppTest over the calculator page: what a user sees for good and bad input (no browser needed)."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers.jobscript import PATIENCE

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def at(offline):
    app = AppTest.from_file(APP, default_timeout=PATIENCE)
    app.run()
    assert not app.exception
    return app


def metrics(app) -> dict:
    return {m.label: m.value for m in app.metric}


def errors(app) -> list[str]:
    return [e.value for e in app.error]


def test_default_is_llava_7b_1_4_1_budget_matched(at):
    # mixed rounding (default): floor/ceil ranks per module meet the budget; the mean ranks keep 1:4:1
    assert metrics(at)["Mean ranks v:p:l"] == "7.89:31.6:7.89"
    assert metrics(at)["Budget error"] == "+0.01%"
    assert any("dead module" in w.value for w in at.warning)
    assert not errors(at)
    table = at.dataframe[0].value
    assert list(table["rank"]) == [8, 32, 8]
    assert list(table["mean rank"]) == pytest.approx([7.89, 31.6, 7.89], abs=0.02)
    assert table.loc["projector", "budget/model"] > 1  # the disproportion the study is about


def test_ratio_text_and_numbers_stay_in_sync(at):
    at.text_input(key="ratio_text").set_value("2:4:1").run()
    assert [at.number_input(key=k).value for k in ("ratio_v", "ratio_p", "ratio_l")] == [2.0, 4.0, 1.0]
    assert metrics(at)["Mean ranks v:p:l"] == "13.8:27.6:6.91"
    at.number_input(key="ratio_p").set_value(8.0).run()
    assert at.text_input(key="ratio_text").value == "2:8:1"
    assert not errors(at)
    at.text_input(key="ratio_text").set_value("2:x:1").run()  # the boxes do not keep the last good numbers
    assert [at.number_input(key=k).value for k in ("ratio_v", "ratio_p", "ratio_l")] == [None, None, None]
    at.text_input(key="ratio_text").set_value("1:4:1").run()
    assert [at.number_input(key=k).value for k in ("ratio_v", "ratio_p", "ratio_l")] == [1.0, 4.0, 1.0]


def test_a_budget_of_20M_params_and_readable_tables(at):
    at.radio(key="budget_kind").set_value("params").run()
    at.text_input(key="budget_params").set_value("20M").run()
    assert not errors(at) and metrics(at)["Budget"] == "20.00 M"
    audit = at.dataframe[2].value  # component table, canonical grid, audit table
    assert list(audit["hand-picked"]) == ["4:16:4", "8:8:8", "2:8:2"]
    snippet = at.code[0].value  # natural order: layers.2 before layers.10, several modules a line
    assert snippet.index("language_model.layers.2.mlp") < snippet.index("language_model.layers.10.mlp")
    assert max(len(line) for line in snippet.splitlines() if "target_modules" not in line and "_pattern" not in line
               and "lora_config" not in line and line.strip().startswith("'model.")) <= 92  # no wrapping at 1280 px


@pytest.mark.parametrize(
    ("ratio", "needle"),
    [("1:-1:2", "ratio: the projector weight"), ("a:b:c", "ratio: the vision weight 'a'"),
     ("0:0:0", "ratio: at least one"), ("1:2", "ratio: expected three numbers")],
)
def test_bad_ratio_is_one_line_naming_the_field(at, ratio, needle):
    at.text_input(key="ratio_text").set_value(ratio).run()
    assert not at.exception
    assert len(errors(at)) == 1 and errors(at)[0].startswith(needle) and "\n" not in errors(at)[0]


@pytest.mark.parametrize(
    ("kind", "value", "needle"),
    [("rank", "abc", "budget (rank): 'abc' is not a number"), ("rank", "-5", "budget: the rank budget must be"),
     ("params", "10", "budget: 10 params is below the minimum of 2,935,808"), ("percent", "150", "budget: a percent")],
)
def test_bad_budget(at, kind, value, needle):
    at.radio(key="budget_kind").set_value(kind).run()
    at.text_input(key=f"budget_{kind}").set_value(value).run()
    assert not at.exception
    assert errors(at) and errors(at)[0].startswith(needle)


def test_share_mode_and_other_budget_forms(at):
    at.radio(key="mode").set_value("share").run()
    assert metrics(at)["Mean ranks v:p:l"] != "7.89:31.6:7.89"
    assert any("capped" in w.value for w in at.warning)
    at.radio(key="budget_kind").set_value("percent").run()
    at.text_input(key="budget_percent").set_value("0.5").run()
    assert metrics(at)["Budget"] == f"{0.005 * 7_063_427_072 / 1e6:.2f} M"


def test_audit_and_export_tabs(at):
    audit = at.dataframe[2].value  # component table, canonical grid, audit table
    row = audit[audit["hand-picked"] == "4:16:4"].iloc[0]
    assert -55 < row["budget error %"] < -45 and row["budget-matched ranks"] == "8:32:8"
    assert "LoraConfig(" in at.code[0].value and "rank_pattern" in at.code[0].value
    at.button[0].click().run()
    assert [s.value for s in at.success] == ["PEFT counts 23,488,000 trainable parameters (calculator: 23,488,000)"]
    at.text_input(key="audit").set_value("4:x:4").run()
    assert any(e.startswith("ranks: the projector rank 'x'") for e in errors(at))


def test_model_sources_fail_clearly(at, tmp_path):
    at.radio(key="model_source").set_value("Local folder").run()
    at.text_input(key="local_dir").set_value(str(tmp_path / "nowhere")).run()
    assert errors(at)[0].startswith("model: no config.json")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    at.text_input(key="local_dir").set_value(str(tmp_path / "bad")).run()
    assert errors(at)[0].startswith("model: ") and "not valid JSON (line 1" in errors(at)[0]
    at.radio(key="model_source").set_value("Hub id").run()
    at.text_input(key="hub_id").set_value("llava-hf/llava-1.5-7b-hf").run()
    assert "unreachable (offline)" in errors(at)[0]
    assert "the preset 'llava-1.5-7b' is this model's config: use it instead" in errors(at)[0]


@pytest.mark.slow  # renders every bundled preset
def test_every_preset_renders(at):
    options = at.selectbox(key="preset").options
    assert len(options) >= 9
    for name in options:
        at.selectbox(key="preset").set_value(name.split(" — ")[0]).run()
        if name.startswith("gemma-3"):  # its projector cannot get a LoRA: said plainly for the default 1:4:1
            assert not at.exception and "Gemma 3's projector is a weight matrix" in errors(at)[0], name
            continue
        assert not at.exception and not errors(at), name


def test_uniform_rounding_flags_the_budget_error_and_full_finetune_arm(at):
    at.radio(key="rounding").set_value("uniform").run()
    assert metrics(at)["Mean ranks v:p:l"] == "8:32:8"
    assert metrics(at)["Budget error"] == "+1.36%"
    assert any("exceeds the 1% tolerance" in e for e in errors(at))  # visible, not a bare number
    grid = at.dataframe[1].value
    assert grid.set_index("ratio").loc["1:4:1", "budget flag"] == "over ±1%"
    at.radio(key="rounding").set_value("mixed").run()
    at.text_input(key="budget_rank").set_value("16").run()
    at.multiselect(key="full_finetune").set_value(["projector"]).run()
    assert not at.exception and not errors(at)
    assert metrics(at)["Mean ranks v:p:l"].split(":")[1] == "full"
    assert any("fully fine-tuned (modules_to_save)" in w.value for w in at.warning)


# ------------------------------------------------------------------------------------ Train & jobs page

JOBS_PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "jobs.py")


def sweep_box(page: AppTest):
    return next(box for box in page.selectbox if box.label == "Sweep")


def _jobs_page(launch: dict) -> AppTest:
    page = AppTest.from_file(JOBS_PAGE, default_timeout=PATIENCE)
    page.session_state["launch"] = launch  # the calculator's hand-off
    return page.run()


@pytest.mark.slow  # a real worker starts and is cancelled twice: about 15 s
def test_jobs_page_estimates_queues_selects_the_new_sweep_and_cancels_and_retries_it(env, demo_structure):  # noqa: F811
    import re

    from tests.helpers.jobs import demo_spec
    from tests.helpers.jobscript import job_steps, wait_for
    from toolkit.queue.lifecycle import live_workers
    from toolkit.queue.store import NewJob
    from toolkit.study.sweep import plan_sweep

    # an earlier run on this machine (the stand-in script, 6 steps): the estimate's measured rate
    old = plan_sweep(demo_spec(ratios="1:1:1", seeds=1, evaluate=False), structure=demo_structure)
    [job] = old.jobs
    env.store.submit_sweep(old.sweep_id, old.spec.normalised(), [NewJob(
        id=job.id, name=job.name, steps=job_steps(job.output_dir, steps=6), output_dir=job.output_dir,
        settings=job.settings)])
    assert env.worker("--once").wait(PATIENCE) == 0
    at = _jobs_page({"model": "demo", "budget_kind": "rank", "budget_value": "8", "ratio": "1:4:1"})
    assert not at.exception and not at.error and sweep_box(at).value == old.sweep_id
    at.checkbox(key="jobs_eval").uncheck().run()
    [estimate] = [i.value for i in at.info if i.value.startswith("Estimated time")]
    assert re.fullmatch(r"Estimated time: about [\d.]+(–[\d.]+)? min for 4 job\(s\) on \d+ slot\(s\) "
                        r"\(from 1 earlier run\(s\) of demo on CPU here\)", estimate), estimate

    next(b for b in at.button if b.label == "Queue sweep").click().run()
    assert not at.exception and not at.error
    [new] = [w["id"] for w in env.store.sweeps() if w["id"] != old.sweep_id]
    assert sweep_box(at).value == new  # the panel follows the sweep just queued
    assert at.success[0].value == f"Queued 4 job(s) as sweep {new[:8]}."
    env.pids += [w["pid"] for w in wait_for(live_workers, what="the worker the page starts")]

    next(b for b in at.button if b.label == "Cancel sweep").click().run()
    assert not at.exception and at.toast[0].value.startswith("Cancel requested for 4 job(s)")
    wait_for(lambda: all(j.state.finished for j in env.store.list(sweep=new)), what="the cancelled sweep")
    at.run()
    next(b for b in at.button if b.label == "Retry sweep").click().run()
    assert not at.exception and at.toast[0].value.startswith(f"Queued 4 job(s) of sweep {new[:8]} again")
    assert all(j.retries == 1 for j in env.store.list(sweep=new))
    next(b for b in at.run().button if b.label == "Cancel sweep").click().run()
    wait_for(lambda: all(j.state.finished for j in env.store.list(sweep=new)), what="the sweep cancelled again")
    table = at.run().dataframe[1].value
    assert "None" not in table.to_string() and set(table["state"]) <= {"cancelled", "succeeded"}


def no_real_worker(monkeypatch) -> None:
    """No worker starts (nothing trains): patched where every page module reads them, in toolkit.queue.lifecycle
    (Streamlit may reload app_pages modules between runs, so patching their own names is not enough) and in the
    modules already imported. A page module Streamlit reloads meanwhile binds the stand-ins too, so the module
    imported now goes back into sys.modules afterwards: later tests in this process get the real functions."""
    import sys

    import app_pages.jobs_panel

    monkeypatch.setitem(sys.modules, "app_pages.jobs_panel", app_pages.jobs_panel)
    no_worker = lambda *a, **k: {"started": False, "pid": None}  # noqa: E731
    monkeypatch.setattr("toolkit.queue.lifecycle.ensure_worker", no_worker)
    monkeypatch.setattr("toolkit.queue.lifecycle.revive_worker", lambda *a, **k: None)
    monkeypatch.setattr("app_pages.jobs_panel.ensure_worker", no_worker)
    monkeypatch.setattr("app_pages.jobs_panel.revive_worker", lambda *a, **k: None)


def test_jobs_page_queues_a_packed_sweep_with_its_arms_in_the_plan(env, demo_structure, monkeypatch):  # noqa: F811
    """'Pack the arms' in the launch form: the plan shows one pack job (its arm count) and each arm under it as
    <job>.<k> with its ratio and ranks; queueing stores one pack job holding every arm."""
    no_real_worker(monkeypatch)
    at = _jobs_page({"model": "demo", "budget_kind": "rank", "budget_value": "8", "ratio": "1:4:1"})
    at.checkbox(key="jobs_pack").check().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    plan = at.dataframe[0].value
    pack_id = plan["job"].iloc[0]
    arms = plan[plan["job"].str.startswith(pack_id + ".")]
    assert plan["ratio"].iloc[0] == f"{len(arms)} arms" and len(arms) >= 2
    assert list(plan["job"].iloc[1:len(arms) + 1]) == [f"{pack_id}.{k}" for k in range(1, len(arms) + 1)]
    assert all(":" in r for r in arms["ranks v:p:l"]) and plan["name"].iloc[-1].endswith("base-reference")
    next(b for b in at.button if b.label == "Queue sweep").click().run()
    assert not at.exception and not at.error
    [sweep] = env.store.sweeps()
    pack = next(j for j in env.store.list(sweep=sweep["id"]) if j.meta["kind"] == "pack")
    assert len(pack.meta["arms"]) == len(arms) and sweep["spec"]["pack"] is True


def test_jobs_page_lists_a_packs_arms_and_cancels_and_retries_one(env, demo_structure, monkeypatch):  # noqa: F811
    """A queued pack job of two arms, the first already trained and scored: the table shows the pack, then its
    arms as <job>.1 (succeeded, with its accuracy) and <job>.2 (queued); picking <job>.2 and Cancel writes its cancel
    request, and with no arm left to train the job is cancelled; Retry withdraws it and queues the pack again."""
    from tests.helpers.adapters import pattern, write_adapter
    from tests.helpers.jobs import demo_spec
    from toolkit.study.packrun import CANCEL_FILE
    from toolkit.study.sweep import plan_sweep, submit_sweep

    no_real_worker(monkeypatch)
    plan = plan_sweep(demo_spec(ratios="1:1:1,1:4:1", seeds=1, pack=True, reference=False), structure=demo_structure)
    [job] = submit_sweep(plan, preflight=False).jobs
    first, second = (Path(a["output_dir"]) for a in job.meta["arms"])
    write_adapter(first.parent, first.name, ratio=(1, 1, 1), accs=pattern(200))
    at = _jobs_page({"model": "demo", "budget_kind": "rank", "budget_value": "8", "ratio": "1:1:1"})
    assert not at.exception and not at.error
    table = at.dataframe[-1].value.set_index("job")
    assert list(table.index) == [job.id, f"{job.id}.1", f"{job.id}.2"]
    assert table.loc[f"{job.id}.1", "state"] == "succeeded" and table.loc[f"{job.id}.1", "accuracy %"] != ""
    assert table.loc[f"{job.id}.2", ["name", "state"]].tolist() == ["arm 1:4:1 seed 0", "queued"]
    at.selectbox(key="jobs_selected").set_value(f"{job.id}.2").run()
    next(b for b in at.button if b.label == "Cancel").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.toast[0].value.startswith(f"Arm {job.id}.2: cancel requested") and "the job is cancelled" in \
        at.toast[0].value
    assert (second / CANCEL_FILE).is_file() and env.store.get(job.id).state.value == "cancelled"
    assert at.run().dataframe[-1].value.set_index("job").loc[f"{job.id}.2", "state"] == "cancelled"  # next refresh
    next(b for b in at.button if b.label == "Retry").click().run()
    assert not at.exception and not at.error and at.toast[0].value.startswith(f"Arm {job.id}.2: queued again")
    assert not (second / CANCEL_FILE).exists() and env.store.get(job.id).state.value == "queued"


def test_jobs_page_refuses_a_model_without_weights_here_before_queueing(env, offline):  # noqa: F811
    page = _jobs_page({"model": "llava-1.5-7b", "budget_kind": "rank", "budget_value": "8", "ratio": "1:4:1"})
    assert not page.exception
    assert [e.value for e in page.error] == [
        "model: the preset 'llava-1.5-7b' is the config of llava-hf/llava-1.5-7b-hf, whose weights are not on this "
        "machine and the Hub is unreachable (offline); train the offline `demo` preset, or pass a local folder with "
        "weights"]
    assert next(b for b in page.button if b.label == "Queue sweep").disabled
    assert "Measure speed here" not in [b.label for b in page.button]  # nothing to measure a refused sweep with
    assert not (env.jobs / "jobs.db").exists() or env.store.list() == []


@pytest.mark.training  # a real probe: 6 demo steps and 32 answers in child processes, about 20 s
def test_jobs_page_measures_the_speed_here_before_the_first_run_of_a_model(env, offline):  # noqa: F811
    import re

    page = _jobs_page({"model": "demo", "budget_kind": "rank", "budget_value": "8", "ratio": "1:4:1"})
    [estimate] = [i.value for i in page.info if i.value.startswith("Estimated time")]
    assert estimate.startswith("Estimated time: none yet (no earlier run of this model on this device here)")
    next(b for b in page.button if b.label == "Measure speed here").click().run()
    assert not page.exception and not page.error
    [estimate] = [i.value for i in page.info if i.value.startswith("Estimated time")]
    assert re.fullmatch(r"Estimated time: about [\d.]+(–[\d.]+)? min for 5 job\(s\) on \d+ slot\(s\) "
                        r"\(from 1 probe\(s\) of demo on CPU here\)", estimate), estimate
    assert "Measure speed here" not in [b.label for b in page.button]
    assert env.store.list() == [] and len((env.jobs / "measured.jsonl").read_text().splitlines()) == 1


def test_the_forms_bounds_choices_and_defaults_come_from_the_settings(env, offline):  # noqa: F811
    """The launch form and the calculator draw their widgets from the settings tree (app_pages/settings_ui.py):
    the steps and batch bounds are TrainSettings' (they were 1e6 and 4,096 against 1e8 and 65,536), the seeds'
    the sweep's own limit, the mode and alpha rule the fields' choices, the alpha box the field's default."""
    from toolkit.calculator.settings import AllocationSettings
    from toolkit.fields import settings_field
    from toolkit.study.sweep import MAX_SEEDS
    from toolkit.training.settings import TrainSettings

    page = _jobs_page({"model": "demo", "budget_kind": "rank", "budget_value": "8", "ratio": "1:4:1"})
    assert not page.exception
    for key, name in (("jobs_steps", "max_steps"), ("jobs_batch", "batch_size")):
        box, f = page.number_input(key=key), settings_field(TrainSettings, name)
        assert (box.min, box.max) == (f.lower, f.upper) and box.help.startswith(f.doc), key
    assert page.number_input(key="jobs_seeds").max == MAX_SEEDS
    assert tuple(page.radio(key="jobs_mode").options) == settings_field(TrainSettings, "mode").choices
    assert page.text_input(key="jobs_lr").value == "0.002"  # the demo's default (model_defaults), shown as text
    calc = AppTest.from_file(str(Path(JOBS_PAGE).parent / "calculator.py"), default_timeout=PATIENCE).run()
    assert tuple(calc.radio(key="alpha_rule").options) == settings_field(AllocationSettings, "alpha_rule").choices
    assert calc.text_input(key="alpha_value").value == f"{settings_field(AllocationSettings, 'alpha_value').default:g}"
    assert tuple(calc.radio(key="rounding").options) == settings_field(AllocationSettings, "rounding").choices


STUDY_PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "study.py")


@pytest.mark.slow  # the recommendation's and the confirmation's bootstraps, twice: about 20 s
def test_study_page_is_provisional_until_the_confirmation_ends_then_shows_the_answer_and_allows_publishing(env):
    from tests.helpers.studies import TEST_TAG, finish, queue_study
    from toolkit.study.confirm import queue_confirmation

    study = queue_study(env.store, "1:1:1,1:4:1,4:1:1")
    finish(env.store, study)
    plan, _ = queue_confirmation(env.store, study)
    page = AppTest.from_file(STUDY_PAGE, default_timeout=PATIENCE).run()
    assert not page.exception and not page.error
    assert [b.label for b in page.selectbox] == ["Study"] and page.selectbox[0].value == study
    [banner] = [w.value for w in page.warning if "Provisional" in w.value]
    assert f"{len(plan.jobs)} of " in banner  # the confirmation's jobs, all queued
    publish = next(b for b in page.button if b.label == "Publish the confirmed adapter")
    assert publish.disabled

    finish(env.store, plan.sweep_id, tag=TEST_TAG)
    page = AppTest.from_file(STUDY_PAGE, default_timeout=PATIENCE).run()
    assert not page.exception and not [w for w in page.warning if "Provisional" in w.value]
    assert any(x.value.startswith("**Answer: confirmed: use 1:4:1") for x in page.success)
    publish = next(b for b in page.button if b.label == "Publish the confirmed adapter")
    assert not publish.disabled
    publish.click().run()
    assert page.session_state["publish_adapter"].endswith(tuple(f"s{s}-{plan.sweep_id[:8]}" for s in plan.spec.seeds))
