"""Successive halving (toolkit.study.halving): noise-aware keep/drop decisions on simulated scores, and the
controller in a real SQLite job store: a finished rung is decided once, its survivors' next rung is queued as
jobs of the same sweep (continuing their runs), a clearly worse arm stops with its reason, restarts add nothing."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from toolkit import cli, runs
from toolkit.errors import InputError
from toolkit.queue.states import JobState
from toolkit.queue.store import JobStore, WorkerInfo
from toolkit.study import halving
from toolkit.study.search import Search
from toolkit.study.selection import decide
from toolkit.study.sweep import SweepSpec, plan_sweep, submit_sweep


def test_a_clearly_worse_arm_is_dropped():
    out = {d.arm: d for d in decide({"1:1:1": [60.0, 61.0], "1:4:1": [62.0, 62.5], "4:1:1": [30.0, 31.0],
                                     "1:1:4": [58.0, 58.4]}, eta=2)}
    assert out["1:4:1"].keep and out["1:1:1"].keep  # the top half
    assert not out["4:1:1"].keep and "behind 1:1:1" in out["4:1:1"].reason
    assert not out["1:1:4"].keep  # 2.3 points behind with SEs of ~0.3: beyond noise


def test_arms_within_noise_are_kept_not_cut_by_rank():
    scores = {"1:1:1": [60.0, 64.0], "1:4:1": [61.0, 65.0], "2:4:1": [59.0, 63.5], "4:1:1": [58.5, 63.0]}
    out = {d.arm: d for d in decide(scores, eta=2)}
    assert all(d.keep for d in out.values())  # raw rank would drop two; their gaps are within 1.96 SE
    assert "within noise" in out["4:1:1"].reason


def test_question_level_noise_bounds_seed_agreement():
    # two seeds that agree exactly give a seed SE of 0; 200 questions still make a 1-point gap noise
    scores = {"a": [60.0, 60.0], "b": [59.0, 59.0]}
    assert not {d.arm: d for d in decide(scores, eta=2)}["b"].keep
    kept = {d.arm: d for d in decide(scores, eta=2, question_se={"a": 2.5, "b": 2.5})}
    assert kept["b"].keep


def test_decisions_on_simulated_studies_drop_the_bad_and_keep_the_best():
    rng = np.random.default_rng(0)
    means = {"1:1:1": 60.0, "1:4:1": 62.0, "2:4:1": 61.5, "0:0:1": 45.0, "1:0:0": 40.0}
    for _ in range(20):
        scores = {a: list(m + rng.normal(0, 1.0, 3)) for a, m in means.items()}
        out = {d.arm: d.keep for d in decide(scores, eta=2)}
        assert not out["0:0:1"] and not out["1:0:0"]
        assert out["1:4:1"] or out["2:4:1"]


def test_search_defaults_and_errors():
    s = Search.parse("halving", max_steps=300)
    assert s.rungs == (75, 150, 300) and s.eta == 2
    assert Search.parse("halving", max_steps=300, rungs="100,300", eta=3).rungs == (100, 300)
    for kwargs, match in (({"max_steps": None}, r"search: successive halving needs --max-steps"),
                          ({"max_steps": 300, "rungs": "100,200"}, r"rungs: the last rung must be the max steps"),
                          ({"max_steps": 300, "rungs": "200,100,300"}, r"rungs: give at least two increasing"),
                          ({"max_steps": 300, "eta": 1}, r"eta: must be a number > 1"),
                          ({"max_steps": 300, "rungs": "a,300"}, r"rungs: 'a,300' is not a list")):
        with pytest.raises(InputError, match=match):
            Search.parse("halving", **kwargs)


# ------------------------------------------------------------------------------------------ the controller

@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("CMBA_JOBS_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(tmp_path / "adapters"))
    return tmp_path


MEANS = {"1:1:1": 60.0, "1:4:1": 61.0, "2:4:1": 60.5, "4:1:1": 30.0}


def _finish_rung(store: JobStore, rung: int, scores=MEANS, fail: str | None = None) -> None:
    """Play the worker for every queued job of `rung`: write its evaluation into its adapter, mark it done."""
    me = WorkerInfo(id="wtest", pid=1, start_time=None, host=socket.gethostname())
    while (job := store.claim(me)) is not None:
        if job.meta.get("kind") == "reference":
            store.finish(job.id, job.token, JobState.SUCCEEDED)
            continue
        assert job.meta["rung"] == rung
        arm = job.meta["ratio"]
        if arm == fail:
            store.finish(job.id, job.token, JobState.FAILED, reason="exit code 1")
            continue
        acc = scores[arm] + 0.2 * job.meta["seed"] + 2 * (rung - 1)
        preds = [runs.Prediction(question_id=str(q), prediction="x", answers=["x"], accuracy=float(q < acc * 2))
                 for q in range(200)]
        runs.write_evaluation(job.meta["adapter"], "synthetic_shapes__validation__n200",
                              result=runs.EvalResult(scores={"overall": acc, "n": 200}), predictions=preds)
        store.finish(job.id, job.token, JobState.SUCCEEDED)


def test_controller_queues_survivors_once_and_says_why_others_stopped(env):
    spec = SweepSpec.build(model="demo", dataset="synthetic:shapes", ratios=",".join(MEANS), seeds=2,
                           budget_kind="rank", budgets="8", train={"max_steps": 40}, gpus_per_job=0,
                           search="halving", reference=False)
    assert spec.search["rungs"] == [10, 20, 40]
    plan = plan_sweep(spec)
    first = plan.jobs[0]
    assert "toolkit.study.rung" in first.steps[0] and "--until" in first.steps[0]
    assert first.steps[0][first.steps[0].index("--until") + 1] == "10"
    store = JobStore()
    result = submit_sweep(plan, store=store)
    sweep = result.sweep_id
    assert halving.advance(store, sweep) is None  # rung 1 still queued: nothing to decide

    _finish_rung(store, 1)
    record = halving.advance(store, sweep)
    assert [e["rung"] for e in record["rungs"]] == [1]
    rung2 = [j for j in store.list(sweep=sweep) if j.meta["rung"] == 2]
    assert {j.meta["ratio"] for j in rung2} == {"1:1:1", "1:4:1", "2:4:1"} and len(rung2) == 6
    for j in rung2:  # the same run folder and settings: the survivor resumes from its step-10 checkpoint
        parent = store.get(j.meta["first_id"])
        assert j.output_dir == parent.output_dir and j.settings == parent.settings
        assert j.steps[0][j.steps[0].index("--until") + 1] == "20" and j.meta["adapter"].endswith("-step0000020")
    # idempotent: a second call (or a restarted worker's recovery pass) queues nothing more
    assert halving.advance(store, sweep) is None  # rung 2 is queued now: nothing to decide
    halving.advance_all(store)
    assert len(store.list(sweep=sweep)) == len(plan.jobs) + 6

    status = halving.status(store, sweep)
    assert status["arms"]["4:1:1"].startswith("stopped at rung 1 (10 steps): behind")
    assert status["arms"]["1:4:1"].startswith("survived rung 1")

    _finish_rung(store, 2, fail="2:4:1")
    halving.advance(store, sweep)
    rung3 = {j.meta["ratio"] for j in store.list(sweep=sweep) if j.meta["rung"] == 3}
    assert "2:4:1" not in rung3 and rung3
    status = halving.status(store, sweep)
    assert "its jobs failed" in status["arms"]["2:4:1"]
    # the last rung pointing at the run folder itself (no snapshot): an ordinary full training
    last = next(j for j in store.list(sweep=sweep) if j.meta["rung"] == 3)
    assert last.meta["adapter"] == last.output_dir


def test_cli_search_flags(env, capsys):
    base = ["sweep", "--model", "demo", "--dataset", "synthetic:shapes", "--ratios", "1:1:1,1:4:1,2:4:1",
            "--budget-rank", "8", "--gpus-per-job", "0", "--dry-run", "--json"]
    assert cli.main([*base, "--max-steps", "40", "--search", "halving", "--rungs", "20,40"]) == 0
    plan = json.loads(capsys.readouterr()[0])
    assert plan["spec"]["search"]["rungs"] == [20, 40] and plan["spec"]["search"]["confirm"] is True
    assert cli.main([*base, "--search", "halving"]) == 2
    assert "needs --max-steps" in capsys.readouterr()[1]
    assert cli.main([*base, "--max-steps", "40", "--rungs", "20,40"]) == 2
    assert "belong to --search halving" in capsys.readouterr()[1]


def test_retrieval_step_runs_after_the_last_rung_only(env):
    spec = SweepSpec.build(model="demo", dataset="synthetic:shapes", ratios="1:1:1,1:4:1", seeds=1,
                           budget_kind="rank", budgets="8", train={"max_steps": 20}, gpus_per_job=0,
                           search="halving", retrieval=8)
    plan = plan_sweep(spec)
    train = [j for j in plan.jobs if j.kind == "train"]
    assert all(len(j.steps) == 2 for j in train)  # rung 1: train to the rung, evaluate; no retrieval yet
    assert plan.jobs[-1].steps[-1][3:5] == ("retrieval", "--base")
    store = JobStore()
    submit_sweep(plan, store=store)
    _finish_rung(store, 1, scores={"1:1:1": 60.0, "1:4:1": 60.5})
    halving.advance(store, plan.sweep_id)  # rungs 5, 10, 20: both arms are within noise and go on
    nxt = [j for j in store.list(sweep=plan.sweep_id) if j.meta.get("rung") == 2]
    assert nxt and all(len(j.steps) == 2 for j in nxt)
    last = halving.rung_steps(nxt[0].settings["train"], nxt[0].settings["evaluate"], until=20, python="py",
                              retrieval=tuple(tuple(x) for x in nxt[0].meta["retrieval_steps"]))[0]
    assert last[-1][3:5] == ("retrieval", "--adapter") and last[-1][5] == nxt[0].output_dir
    with pytest.raises(InputError, match=r"retrieval dataset: give an image-caption dataset"):
        SweepSpec.build(model="demo", dataset="some/vqa", ratios="1:1:1", budget_kind="rank", budgets="8",
                        gpus_per_job=0, retrieval=8)


def test_a_crash_between_decision_and_queueing_is_picked_up(env, monkeypatch):
    spec = SweepSpec.build(model="demo", dataset="synthetic:shapes", ratios=",".join(MEANS), seeds=2,
                           budget_kind="rank", budgets="8", train={"max_steps": 40}, gpus_per_job=0,
                           search="halving", reference=False)
    store = JobStore()
    sweep = submit_sweep(plan_sweep(spec), store=store).sweep_id
    _finish_rung(store, 1)
    real = JobStore.add_to_sweep

    def crash(self, *args, **kwargs):
        raise OSError("worker killed")
    monkeypatch.setattr(JobStore, "add_to_sweep", crash)
    with pytest.raises(OSError):
        halving.advance(store, sweep)
    assert [e["rung"] for e in json.loads(halving.record_path(store, sweep).read_text())["rungs"]] == [1]
    monkeypatch.setattr(JobStore, "add_to_sweep", real)
    halving.advance_all(store)  # the next recovery pass
    assert len([j for j in store.list(sweep=sweep) if j.meta["rung"] == 2]) == 6
    assert [e["rung"] for e in halving.status(store, sweep)["rungs"]] == [1]


def test_jobs_page_plans_a_designed_halving_study(env):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app_pages" / "jobs.py"), default_timeout=600)
    at.session_state["launch"] = {"model": "demo", "budget_kind": "rank", "budget_value": "8", "ratio": "1:1:1"}
    at.run()
    at.checkbox(key="jobs_designed").check().run()
    assert not at.exception and not at.error
    assert at.text_input(key="jobs_design").value == "simplex-lattice:3" and at.checkbox(key="jobs_halving").value
    planned = at.dataframe[0].value
    arms = set(planned["ratio"]) - {"base model"}
    assert len(arms) == 9 and "1:1:1" in arms and "0:1:0" not in arms  # the lattice, less the arm caps rule out
    assert any("0:1:0" in w.value for w in at.warning)
    at.text_input(key="jobs_design").set_value("simplex-lattice:0").run()
    assert any(e.value.startswith("design:") for e in at.error)
