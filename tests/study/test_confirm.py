"""Confirmation and controls of a designed study (toolkit.study.confirm), and one whole halving search on the real
demo model through a real worker: rungs continue runs from their checkpoints, the recommendation is fitted and
the confirmation is queued by the worker itself."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.queue.states import JobState
from toolkit.queue.store import JobStore
from toolkit.study import halving
from toolkit.study.confirm import confirmation_spec, control_specs
from toolkit.study.sweep import SweepSpec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("CMBA_JOBS_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(tmp_path / "adapters"))
    return tmp_path


def study(**kw) -> dict:
    return SweepSpec.build(model="demo", dataset="synthetic:shapes", ratios="", design="simplex-centroid",
                           budget_kind="rank", budgets="8", seeds=2, train={"max_steps": 40, "lr": "5e-3"},
                           gpus_per_job=0, search="halving", **kw).normalised()


def test_confirmation_is_the_ratio_and_uniform_with_fresh_seeds_on_the_report_split(env):
    spec = confirmation_spec(study(), ratio="2:4:1")
    assert set(spec.ratios) == {"2:4:1", "1:1:1"} and spec.seeds == (2, 3, 4)
    assert spec.eval_split == "test" and spec.search is None and spec.design is None
    assert spec.base["max_steps"] == 40 and spec.budgets[0].value == 8
    assert confirmation_spec(study(), ratio="1:4:1", seeds=5, report_split="validation").seeds == (2, 3, 4, 5, 6)


def test_controls_scale_the_projector_lr_and_vary_the_alpha_rule(env):
    specs = control_specs(study(), ratio="1:4:1")
    lr = specs["lr control"]
    assert lr.ratios == ("1:1:1",) and lr.name.endswith("-lrctl")
    structure = lr.job_settings(ratio="1:1:1", budget=lr.budgets[0], seed=2).load_structure()
    alloc = {r: lr.job_settings(ratio=r, budget=lr.budgets[0], seed=2).allocation(structure) for r in ("1:4:1", "1:1:1")}
    scale = alloc["1:4:1"].components["projector"].mean_rank / alloc["1:1:1"].components["projector"].mean_rank
    assert 3 < scale < 5 and math.isclose(lr.base["lr_projector"], 5e-3 * scale, rel_tol=1e-6)
    r0 = alloc["1:1:1"].components["language"].mean_rank
    rslora, fixed = specs["alpha rslora"].settings, specs["alpha fixed"].settings
    assert rslora.alpha_rule == "rslora" and math.isclose(rslora.alpha_value, 2 * r0 ** 0.5, rel_tol=1e-3)
    assert fixed.alpha_rule == "fixed" and math.isclose(fixed.alpha_value, 2 * r0, rel_tol=1e-3)
    assert set(specs["alpha fixed"].ratios) == {"1:4:1", "1:1:1"}
    assert len({s.sweep_id for s in specs.values()}) == 3  # three separate sweeps, kept apart by their settings


@pytest.mark.slow
@pytest.mark.training
def test_halving_search_end_to_end_on_the_demo_model(env):
    """3 arms x 1 seed, rungs 4 and 8 steps, a real worker; then the recommendation and the confirmation."""
    run = {**os.environ, "CMBA_JOBS_DIR": str(env / "jobs"), "CMBA_ADAPTERS_DIR": str(env / "adapters")}
    py = [sys.executable, "-m", "toolkit"]
    plan = json.loads(subprocess.run(
        [*py, "sweep", "--model", "demo", "--dataset", "synthetic:shapes?n=64", "--ratios", "1:1:1,1:4:1,4:1:1",
         "--budget-rank", "8", "--max-steps", "8", "--batch-size", "4", "--lr", "5e-3", "--eval-limit", "12",
         "--search", "halving", "--rungs", "4,8", "--eta", "1.5", "--no-confirm", "--no-reference", "--no-worker",
         "--gpus-per-job", "0", "--json"], cwd=ROOT, env=run, check=True, capture_output=True, text=True).stdout)
    worker = subprocess.run([*py, "worker", "--slots", "2", "--once", "--poll", "0.2"], cwd=ROOT, env=run,
                            capture_output=True, text=True)
    assert worker.returncode == 0, worker.stderr[-2000:]
    store = JobStore(env / "jobs")
    jobs = store.list(sweep=plan["sweep"])
    assert {j.state for j in jobs} == {JobState.SUCCEEDED}, [(j.name, j.state, j.message) for j in jobs]
    status = halving.status(store, plan["sweep"])
    assert [e["rung"] for e in status["rungs"]] == [1, 2]
    second = [j for j in jobs if j.meta["rung"] == 2]
    assert 2 <= len(second) <= 3  # eta 1.5: the top 2 go on, the third only if within noise
    for j in second:  # continued from the rung-1 checkpoint in the same run folder: one metrics file, steps 1..8
        steps = [json.loads(line)["step"] for line in open(Path(j.output_dir) / "metrics.jsonl")]
        assert steps == list(range(1, 9))
        assert (Path(j.output_dir + "-step0000004") / "cmba.json").exists()
    confirm = [*py, "confirm", "--sweep", plan["sweep"][:8], "--seeds", "1", "--no-worker", "--json"]
    code = subprocess.run(confirm, cwd=ROOT, env=run, capture_output=True, text=True)
    if code.returncode == 2:  # an 8-step search may find nothing above 1:1:1: then nothing is queued, said in one line
        assert code.stderr.startswith("error: confirm: nothing to confirm") and code.stderr.count("\n") == 1
        code = subprocess.run([*confirm, "--ratio", "1:4:1"], cwd=ROOT, env=run, capture_output=True, text=True)
    assert code.returncode == 0, code.stderr
    doc = json.loads(code.stdout)
    assert doc["created"] and "1:1:1" in doc["ratios"] and doc["split"] == "test" and doc["seeds"] == [1]


def test_controls_report_says_whether_the_advantage_survives(env):
    from tests.helpers.adapters import pattern, write_adapter
    from toolkit.study.confirm import controls_report, queue_confirmation, queue_controls
    from toolkit.study.sweep import plan_sweep, submit_sweep

    store = JobStore()
    study_id = submit_sweep(plan_sweep(SweepSpec.build(
        model="demo", dataset="synthetic:shapes", ratios="1:1:1,1:4:1,4:1:1", budget_kind="rank", budgets="8",
        seeds=2, train={"max_steps": 40}, gpus_per_job=0, reference=False)), store=store).sweep_id
    plan, _ = queue_confirmation(store, study_id, ratio="1:4:1")
    controls = queue_controls(store, study_id, ratio="1:4:1")
    assert set(controls) == {"lr control", "alpha rslora", "alpha fixed"}
    # evaluations as the worker would leave them: 1:4:1 ahead of 1:1:1 by ~10 points, except under fixed alpha;
    # the lr control (1:1:1 with the scaled projector lr) as good as 1:4:1
    level = {(plan.sweep_id, "1:4:1"): 300, (plan.sweep_id, "1:1:1"): 260, (controls["lr control"], "1:1:1"): 300,
             (controls["alpha rslora"], "1:4:1"): 300, (controls["alpha rslora"], "1:1:1"): 260,
             (controls["alpha fixed"], "1:4:1"): 262, (controls["alpha fixed"], "1:1:1"): 260}
    for sweep in (plan.sweep_id, *controls.values()):
        for job in store.list(sweep=sweep):
            out = Path(job.output_dir)
            ratio = tuple(float(x) for x in job.meta["ratio"].split(":"))
            write_adapter(out.parent, out.name, ratio=ratio, seed=job.meta["seed"], budget=110080, params=110080,
                          accs=pattern(level[(sweep, job.meta["ratio"])] + 3 * job.meta["seed"], offset=job.meta["seed"]))
    report = {r["control"]: r for r in controls_report(store, confirmation=plan.sweep_id, controls=controls,
                                                        ratio="1:4:1")}
    assert report["alpha rslora"]["survives"] is True and report["alpha rslora"]["delta"] == pytest.approx(10.0)
    assert report["alpha fixed"]["survives"] is False and report["lr control"]["survives"] is False
    assert report["lr control"]["delta"] == pytest.approx(0.0) and report["lr control"]["seeds"] == [3, 3]
