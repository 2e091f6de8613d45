"""Scheduling by pack (#28): `sweep --pack` queues one job per pack of arms, whose step `python -m toolkit pack`
trains the arms in one process (toolkit.training.pack) and evaluates each there, on the base already loaded.

Fast: the plan's grouping (sizes, names, ids, meta, settings, the id of an unpacked sweep unchanged), the CLI's
dry run, refusals, and the readers of a pack job (sweep_rows, loss curves, the cost estimate). Training: the
in-process evaluation writes what a separate `evaluate` of the same adapter writes; a pack run again skips what
is done and reloads the base only when nothing was trained; a pack step killed with SIGKILL after a checkpoint
and run again ends with the uninterrupted pack's weights; a packed sweep through a real worker ends with
`compare` seeing every arm.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.helpers.jobs import demo_spec
from tests.helpers.jobscript import PATIENCE, wait_for
from toolkit.errors import InputError

DATA = "synthetic:shapes?n=40"
TIMING = ("eval_time_s", "questions_per_s", "created")
"""results.json fields that differ between two runs of the same evaluation"""


# ------------------------------------------------------------------------------------------ the plan (fast)


def test_pack_plan_groups_each_budgets_arms_into_even_packs(env, demo_structure):
    from toolkit.study.packrun import PackSettings
    from toolkit.study.sweep import plan_sweep

    unpacked = plan_sweep(demo_spec(), structure=demo_structure)
    assert "pack" not in unpacked.spec.normalised() and "pack_size" not in unpacked.spec.normalised()
    plan = plan_sweep(demo_spec(budgets="4,8", pack=True, pack_size=4), structure=demo_structure)
    assert plan.sweep_id != unpacked.sweep_id and plan.spec.normalised()["pack_size"] == 4
    # 3 ratios x 2 seeds per budget = 6 arms -> 2 packs of 3 (not 4 + 2), then the reference
    assert [j.name for j in plan.jobs] == ["demo-pack-b4-1of2", "demo-pack-b4-2of2", "demo-pack-b8-1of2",
                                           "demo-pack-b8-2of2", "demo-base-reference"]
    assert [j.kind for j in plan.jobs] == ["pack"] * 4 + ["reference"]
    assert [j.id for j in plan.jobs] == [f"{plan.short_id}-{k:02d}" for k in range(1, 6)]
    # seed by seed: each pack holds every ratio of one seed
    assert [([a.ratio for a in j.arms], {a.seed for a in j.arms}) for j in plan.jobs[:2]] == [
        (["1:1:1", "1:4:1", "2:4:1"], {0}), (["1:1:1", "1:4:1", "2:4:1"], {1})]
    singles = {(str(j.budget), j.ratio, j.seed): j for j in plan_sweep(demo_spec(budgets="4,8"), structure=demo_structure).jobs
               if j.kind == "train"}
    seen = []
    for job in plan.jobs[:4]:
        assert len(job.arms) == 3 and job.output_dir == job.arms[0].output_dir
        assert [a.id for a in job.arms] == [f"{job.id}.{k}" for k in (1, 2, 3)]
        [step] = job.steps
        assert step[:5] == ("{python}", "-m", "toolkit", "pack", "--settings-json")
        packed = PackSettings.from_json(step[5])
        assert [a.train.to_dict() for a in packed.arms] == [a["train"] for a in job.settings["arms"]]
        assert job.settings["train"] == job.settings["arms"][0]["train"]
        for arm, settings in zip(job.arms, packed.arms):
            seen.append((str(job.budget), arm.ratio, arm.seed))
            assert str(settings.train.budget_rank) == str(job.budget.value) and settings.train.resume
            assert settings.evaluate.adapter == arm.output_dir == settings.train.output
            # an arm trains exactly what the unpacked sweep's job of that arm would, into a folder of this sweep
            single = singles[(str(job.budget), arm.ratio, arm.seed)]
            assert {**settings.train.to_dict(), "output": None} == {**single.settings["train"], "output": None}
            assert arm.lora_sha256 == single.lora_sha256 and arm.ranks == single.ranks
    assert sorted(seen) == sorted(singles)
    assert plan.to_dict()["jobs"][0]["arms"][0]["job"] == f"{plan.short_id}-01.1"


def test_pack_size_default_is_every_arm_of_a_budget_and_meta_lists_the_arms(env, demo_structure):
    from toolkit.study.sweep import plan_sweep, submit_sweep

    plan = plan_sweep(demo_spec(ratios="1:1:1,1:4:1", seeds=2, pack=True, reference=False), structure=demo_structure)
    [job] = plan.jobs
    assert job.name == "demo-pack-b8-1of1" and len(job.arms) == 4
    [stored] = submit_sweep(plan, preflight=False).jobs
    assert stored.meta["kind"] == "pack" and stored.output_dir == job.arms[0].output_dir
    assert [(a["ratio"], a["seed"], a["output_dir"]) for a in stored.meta["arms"]] == [
        (a.ratio, a.seed, a.output_dir) for a in job.arms]
    assert stored.settings["arms"] == job.settings["arms"]


def test_cli_sweep_pack_dry_run(env, run_cli, demo_structure):
    args = ["sweep", "--model", "demo", "--dataset", "synthetic:shapes", "--ratios", "1:1:1,1:4:1", "--seeds", "2",
            "--budget-rank", "8", "--max-steps", "10", "--gpus-per-job", "0", "--dry-run"]
    code, out, err = run_cli(*args, "--pack", "--pack-size", "2")
    assert code == 0, err
    lines = out.splitlines()
    packs = [line for line in lines if "demo-pack-b8-" in line]
    assert len(packs) == 2 and all("2 arm(s)" in line for line in packs)
    assert sum(1 for line in lines if line.startswith("  1:1:1 s") or line.startswith("  1:4:1 s")) == 4
    code, out, _ = run_cli(*args, "--pack", "--json")
    doc = json.loads(out)
    assert code == 0 and [j["kind"] for j in doc["jobs"]] == ["pack", "reference"]
    assert len(doc["jobs"][0]["arms"]) == 4 and doc["spec"]["pack"] is True
    code, _, err = run_cli(*args, "--pack-size", "2")
    assert code == 2 and err == "error: pack size: only with --pack\n"


@pytest.mark.parametrize("overrides,match", [
    ({"pack_size": 2}, r"pack size: only with --pack"),
    ({"pack": True, "pack_size": 0}, r"pack size: must be >= 1"),
    ({"pack": True, "pack_size": 65}, r"pack size: must be a whole number in 1\.\.64"),
    ({"pack": True, "search": "halving", "budgets": "4,8"}, r"pack: a search inside a pack decides over one budget"),
    ({"pack": True, "gpus_per_job": 2}, r"pack: a pack trains in one process on one device"),
])
def test_pack_refusals_are_one_line(env, overrides, match):
    with pytest.raises(InputError, match=match) as info:
        demo_spec(**overrides)
    assert "\n" not in str(info.value)


def test_pack_settings_refuse_an_arm_without_its_own_folder_or_evaluating_another(tmp_path):
    from toolkit.study.packrun import PackSettings

    train = {"model": "demo", "dataset": DATA, "ratio": "1:1:1", "budget_rank": 4, "max_steps": 2}
    with pytest.raises(InputError, match=r"pack: arm 1 names no run folder"):
        PackSettings.from_dict({"arms": [{"train": train}]})
    with pytest.raises(InputError, match=r"pack: arm 1 evaluates '.*other' but trains into"):
        PackSettings.from_dict({"arms": [{"train": {**train, "output": str(tmp_path / "a")},
                                          "evaluate": {"dataset": DATA, "adapter": str(tmp_path / "other")}}]})
    with pytest.raises(InputError, match=r"pack: the settings must be"):
        PackSettings.from_json("[]")
    packed = PackSettings.from_dict({"arms": [{"train": {**train, "output": str(tmp_path / "a")},
                                               "evaluate": {"dataset": DATA}}]})
    assert packed.arms[0].evaluate.adapter == str(tmp_path / "a")  # its evaluation scores its own folder
    assert PackSettings.from_json(packed.to_json()) == packed


def test_readers_of_a_pack_job_see_every_arm(env, demo_structure):
    """sweep_rows (the study's comparison rows), the loss curves and the cost estimate count each arm; the speed
    probe measures the first arm."""
    from tests.helpers.adapters import pattern, write_adapter
    from toolkit.study.confirm import sweep_rows
    from toolkit.study.estimate import job_cost
    from toolkit.study.probe import probe_settings
    from toolkit.study.progress import loss_curves
    from toolkit.study.sweep import plan_sweep, submit_sweep

    plan = plan_sweep(demo_spec(ratios="1:1:1,1:4:1", seeds=2, pack=True, pack_size=2, reference=False),
                      structure=demo_structure)
    jobs = submit_sweep(plan, preflight=False).jobs
    for job in jobs:
        for k, arm in enumerate(job.meta["arms"]):
            folder = Path(arm["output_dir"])
            ratio = tuple(int(x) for x in arm["ratio"].split(":"))
            write_adapter(folder.parent, folder.name, ratio=ratio, seed=arm["seed"], accs=pattern(200, offset=k))
    rows = sweep_rows(env.store, plan.sweep_id)
    assert sorted(Path(r["path"]).name for r in rows) == sorted(Path(a.output_dir).name for j in plan.jobs
                                                                for a in j.arms)
    curves = loss_curves(jobs)
    assert len({r["job"] for r in curves}) == 4 and {(r["ratio"], r["seed"]) for r in curves} == {
        (r, s) for r in ("1:1:1", "1:4:1") for s in (0, 1)}
    one = job_cost(plan.jobs[0].arms[0].settings, model="demo", gpu=False)
    pack = job_cost(plan.jobs[0].settings, model="demo", gpu=False)
    assert pack.steps == one.steps and pack.batch_size == 2 * one.batch_size and pack.questions == 2 * one.questions
    name, train, _ = probe_settings(plan, env.tmp / "probe")  # `--measure` probes a pack's first arm alone
    assert name == plan.jobs[0].arms[0].name and train["ratio"] == plan.jobs[0].arms[0].ratio


# ------------------------------------------------------------------------------------------ training


def pack_settings(root: Path, *, steps: int = 4, checkpoint_every: int = 2, eval_limit: int = 24,
                  arms=(("1:1:1", 0), ("1:4:1", 1))):
    from toolkit.study.packrun import PackSettings
    from toolkit.training.settings import EvalSettings, TrainSettings

    out = []
    for ratio, seed in arms:
        folder = str(root / f"r{ratio.replace(':', '-')}-s{seed}")
        train = TrainSettings(model="demo", dataset=DATA, ratio=ratio, budget_rank=4, seed=seed, max_steps=steps,
                              batch_size=4, checkpoint_every=checkpoint_every, output=folder, resume=True,
                              progress=False)
        evaluate = EvalSettings(adapter=folder, dataset=DATA, split="validation", limit=eval_limit, batch_size=8)
        out.append({"train": train.to_dict(), "evaluate": evaluate.to_dict()})
    return PackSettings.from_dict({"arms": out})


def results(folder: Path) -> tuple[dict, str]:
    [tag] = os.listdir(folder / "eval")
    doc = json.loads((folder / "eval" / tag / "results.json").read_text())
    return {k: v for k, v in doc.items() if k not in TIMING}, (folder / "eval" / tag / "predictions.jsonl").read_text()


def evaluate_copy(run_cli, folder: Path, copy: Path, settings) -> None:
    """`evaluate` of a copy of the adapter (without its evaluations): a separate load of the base."""
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("eval"))
    e = settings.evaluate
    code, _, err = run_cli("evaluate", "--adapter", str(copy), "--dataset", e.dataset, "--split", e.split,
                           "--limit", str(e.limit), "--batch-size", str(e.batch_size))
    assert code == 0, err


@pytest.fixture
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.training
def test_in_process_evaluation_writes_what_evaluate_writes(tmp_path, run_cli, monkeypatch, one_thread):
    from toolkit.study import packrun

    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(tmp_path / "store"))
    settings = pack_settings(tmp_path / "pack")
    report = packrun.run_pack(settings, log=lambda m: None)
    assert report.mode == "fused" and report.trained == 2 and report.base_loads == 0  # the trained base, reused
    assert [e["ran"] for e in report.evaluations] == [True, True]
    for arm in settings.arms:
        folder = Path(arm.train.output)
        copy = tmp_path / "copies" / folder.name
        evaluate_copy(run_cli, folder, copy, arm)
        (doc, predictions), (alone, alone_predictions) = results(folder), results(copy)
        assert doc == alone and doc["scores"]["n"] == 24
        assert predictions == alone_predictions

    # run again: nothing to train or evaluate; with one evaluation removed, the base is loaded once for it
    again = packrun.run_pack(settings, log=lambda m: None)
    assert again.trained == 0 and again.base_loads == 0 and [e["ran"] for e in again.evaluations] == [False, False]
    first = Path(settings.arms[0].train.output)
    before = results(first)
    shutil.rmtree(first / "eval")
    third = packrun.run_pack(settings, log=lambda m: None)
    assert third.base_loads == 1 and [e["ran"] for e in third.evaluations] == [True, False]
    assert results(first) == before


@pytest.mark.training
def test_evaluation_reloads_the_base_where_training_changed_it(tmp_path, monkeypatch, one_thread):
    """Where the trained base is not what `evaluate` loads (here: told so), the base is loaded once for every arm."""
    from toolkit.study import packrun

    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(tmp_path / "store"))
    monkeypatch.setattr(packrun, "reuse_blocker", lambda model, train: "a test says so")
    lines = []
    report = packrun.run_pack(pack_settings(tmp_path / "pack", steps=2, eval_limit=8), log=lines.append)
    assert report.base_loads == 1 and [e["ran"] for e in report.evaluations] == [True, True]
    assert "evaluation loads the base model again: a test says so" in lines


def adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.training
@pytest.mark.slow
def test_pack_step_killed_after_a_checkpoint_resumes_every_arm(tmp_path, monkeypatch, one_thread):
    """SIGKILL of `python -m toolkit pack` (its whole process group) once a checkpoint exists; run again, every
    arm ends with the weights of the same pack run without interruption (within 1e-5) and is evaluated."""
    from toolkit import runs
    from toolkit.study import packrun

    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(tmp_path / "store"))
    steps = 12
    reference = pack_settings(tmp_path / "uninterrupted", steps=steps, checkpoint_every=2, eval_limit=8)
    packrun.run_pack(reference, log=lambda m: None)
    settings = pack_settings(tmp_path / "killed", steps=steps, checkpoint_every=2, eval_limit=8)
    (tmp_path / "pack.json").write_text(settings.to_json())
    folders = [Path(a.train.output) for a in settings.arms]
    command = [sys.executable, "-m", "toolkit", "pack", "--settings-json", str(tmp_path / "pack.json")]
    environ = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "first.log", "wb") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=environ,
                                start_new_session=True)
    try:
        wait_for(lambda: any(runs.complete_checkpoints(f) for f in folders) or proc.poll() is not None,
                 what="the first checkpoint")
        assert proc.poll() is None, (tmp_path / "first.log").read_text()  # it ended before its first checkpoint
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()
    assert not all(runs.is_complete(f) for f in folders)  # killed in training
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=environ, timeout=PATIENCE)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stderr and "from step" in again.stderr
    for folder, solo in zip(folders, (Path(a.train.output) for a in reference.arms)):
        assert runs.is_complete(folder)
        steps_logged = [json.loads(x)["step"] for x in (folder / "metrics.jsonl").read_text().splitlines()]
        assert steps_logged == list(range(1, steps + 1))  # resumed, not restarted, no step twice
        mine, theirs = adapter(folder), adapter(solo)
        assert mine.keys() == theirs.keys()
        worst = max((mine[k] - theirs[k]).abs().max().item() for k in mine)
        assert worst <= 1e-5, f"{folder.name}: weights differ from the uninterrupted pack's by {worst:.3g}"
        assert results(folder)[0]["scores"]["n"] == 8


@pytest.mark.training
@pytest.mark.slow
def test_packed_sweep_through_a_worker_ends_with_every_arm_compared(env, run_cli):
    """`sweep --pack` (2 ratios x 2 seeds: one pack job), `worker --once` runs it, `compare` sees 4 adapters."""
    from toolkit.queue.states import JobState
    from toolkit.study.confirm import sweep_rows

    r = subprocess.run([sys.executable, "-m", "toolkit", "sweep", "--model", "demo", "--dataset", DATA, "--ratios",
                        "1:1:1,1:4:1", "--seeds", "2", "--budget-rank", "4", "--max-steps", "4", "--batch-size", "4",
                        "--checkpoint-every", "2", "--eval-limit", "8", "--no-reference", "--gpus-per-job", "0",
                        "--pack", "--no-worker", "--json"],
                       cwd=ROOT, capture_output=True, text=True, env=os.environ.copy(), timeout=PATIENCE)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    [job_id] = [j["job"] for j in doc["jobs"]]
    assert env.worker("--threads", "1", "--once").wait(timeout=PATIENCE) == 0
    job = env.store.get(job_id)
    assert job.state is JobState.SUCCEEDED, (job.message, open(job.log_path).read()[-3000:])
    assert job.name == "demo-pack-b4-1of1" and len(job.meta["arms"]) == 4
    log = open(job.log_path).read()
    assert "pack of 4 arms on one llava base: fused" in log and "on the base model trained here" in log
    code, out, err = run_cli("compare", "--adapters-dir", str(env.adapters), "--json")
    assert code == 0, err
    compared = json.loads(out)
    paths = {str(Path(a["output_dir"]).resolve()) for a in job.meta["arms"]}
    assert {str(Path(r["path"]).resolve()) for r in compared["rows"]} == paths
    assert all(r["n"] == 8 for r in compared["rows"])
    assert {str(Path(r["path"]).resolve()) for r in sweep_rows(env.store, doc["sweep"])} == paths


@pytest.mark.training
@pytest.mark.slow
def test_cancelling_one_arm_of_a_running_pack_lets_the_others_finish(env, run_cli):
    """`jobs cancel <job>.2` while the pack trains: that arm leaves the pack at a step boundary with a checkpoint
    (no finished run folder, no evaluation), the three others finish and are evaluated, the job succeeds, and
    `jobs list` shows the arm cancelled. `jobs retry <job>.2` queues the pack again: it trains only that arm, from
    its checkpoint (every step logged once), and evaluates it."""
    from toolkit import runs
    from toolkit.queue.states import JobState
    from toolkit.study.packrun import arm_states

    steps = 60
    r = subprocess.run([sys.executable, "-m", "toolkit", "sweep", "--model", "demo", "--dataset", DATA, "--ratios",
                        "1:1:1,1:4:1", "--seeds", "2", "--budget-rank", "4", "--max-steps", str(steps),
                        "--batch-size", "4", "--checkpoint-every", "25", "--eval-limit", "8", "--no-reference",
                        "--gpus-per-job", "0", "--pack", "--no-worker", "--json"],
                       cwd=ROOT, capture_output=True, text=True, env=os.environ.copy(), timeout=PATIENCE)
    assert r.returncode == 0, r.stderr
    [job_id] = [j["job"] for j in json.loads(r.stdout)["jobs"]]
    job = env.store.get(job_id)
    gone = Path(job.meta["arms"][1]["output_dir"])
    worker = env.worker("--threads", "1", "--once")
    wait_for(lambda: bool(runs.read_metrics(gone)) or worker.poll() is not None, what="the pack's first step")
    code, out, err = run_cli("jobs", "cancel", f"{job_id}.2")
    assert code == 0, err
    assert out.startswith(f"arm {job_id}.2 (1:4:1, seed 0): cancel requested")
    assert worker.wait(timeout=PATIENCE) == 0
    job = env.store.get(job_id)
    assert job.state is JobState.SUCCEEDED, (job.message, open(job.log_path).read()[-3000:])
    assert [a["state"] for a in arm_states(job)] == ["succeeded", "cancelled", "succeeded", "succeeded"]
    left_at = len(runs.read_metrics(gone))
    assert 1 <= left_at < steps and not runs.is_complete(gone) and not (gone / "eval").exists()
    assert f"leaves the pack at step {left_at}/{steps}: cancelled by user (checkpointed)" in open(job.log_path).read()
    for arm in job.meta["arms"][::2] + job.meta["arms"][3:]:
        assert runs.is_complete(arm["output_dir"]) and results(Path(arm["output_dir"]))[0]["scores"]["n"] == 8
    code, out, _ = run_cli("jobs", "list")
    assert code == 0 and any(line.split()[:2] == [f"{job_id}.2", "cancelled"] for line in out.splitlines()), out
    code, _, err = run_cli("jobs", "cancel", f"{job_id}.1")
    assert code == 2 and f"arm {job_id}.1: already trained" in err
    code, _, err = run_cli("jobs", "cancel", f"{job_id}.5")
    assert code == 2 and f"arm: job {job_id} has arms {job_id}.1 to {job_id}.4" in err

    code, out, err = run_cli("jobs", "retry", f"{job_id}.2", "--no-worker")
    assert code == 0, err
    assert env.store.get(job_id).state is JobState.QUEUED
    assert env.worker("--threads", "1", "--once").wait(timeout=PATIENCE) == 0
    job = env.store.get(job_id)
    assert job.state is JobState.SUCCEEDED and [a["state"] for a in arm_states(job)] == ["succeeded"] * 4
    assert [m.step for m in runs.read_metrics(gone)] == list(range(1, steps + 1))  # resumed, no step twice
    assert results(gone)[0]["scores"]["n"] == 8


@pytest.mark.training
def test_halving_inside_a_pack_drops_arms_at_the_rung_and_trains_the_survivors_on(tmp_path, run_cli, monkeypatch,
                                                                                   one_thread):
    """A pack of 4 ratios x 1 seed with a search (rungs 2, 4; eta 4): at step 2 every arm is checkpointed and
    snapshotted, each snapshot evaluated in the process (what a separate `evaluate` of it writes), and the rung
    decided into the search's record by the job system's rule. Scores are planted (2:1:1 best, then 1:1:1, 1:2:1,
    1:1:2), so 2:1:1 (top 1 of 4) and 1:1:1 (the reference) go on and the other two leave the pack there; the
    survivors finish all 4 steps, are evaluated, and the final rung is recorded. Run again, nothing is trained or
    decided again, and the dropped arms stay out."""
    from toolkit import runs
    from toolkit.study import halving, packrun, packsearch
    from toolkit.study.search import Search

    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("CMBA_JOBS_DIR", str(tmp_path / "jobs"))
    planted = {"2:1:1": 70.0, "1:1:1": 60.0, "1:2:1": 50.0, "1:1:2": 40.0}
    real = packsearch.folder_score

    def planted_score(folder):
        real(folder)  # the evaluation is really there and reads back
        ratio = ":".join(f"{x:g}" for x in runs.read_adapter_doc(folder).allocation.ratio)
        return planted[ratio], 1.0

    monkeypatch.setattr(packsearch, "folder_score", planted_score)
    base = pack_settings(tmp_path / "pack", steps=4, checkpoint_every=100, eval_limit=16,
                         arms=[(r, 0) for r in planted]).to_dict()
    search = {"sweep": "feedbeef" * 5, "search": Search.parse("halving", max_steps=4, rungs="2,4", eta=4,
                                                                 z=0).to_dict()}
    settings = packrun.PackSettings.from_dict({**base, "search": search})
    lines: list[str] = []
    report = packrun.run_pack(settings, log=lines.append)
    folders = {r: Path(a.train.output) for r, a in zip(planted, settings.arms)}
    assert sorted(report.left) == sorted(folders[r].name for r in ("1:2:1", "1:1:2"))
    assert all(why.startswith("stopped at rung 1 (2 steps): behind") for why in report.left.values())
    record = runs.read_json(tmp_path / "jobs" / "halving" / f"{search['sweep']}.json")
    assert [(e["rung"], e["final"]) for e in record["rungs"]] == [(1, False), (2, True)]
    assert {d["arm"]: d["keep"] for d in record["rungs"][0]["decisions"]} == {
        "2:1:1": True, "1:1:1": True, "1:2:1": False, "1:1:2": False}
    assert [d["arm"] for d in record["rungs"][1]["decisions"]] == ["2:1:1", "1:1:1"]
    for ratio, folder in folders.items():
        snap = runs.snapshot_dir(folder, 2)
        assert runs.is_complete(snap) and runs.read_adapter_doc(snap).result.steps == 2 and runs.evaluations(snap)
        if ratio in ("2:1:1", "1:1:1"):
            assert runs.is_complete(folder) and [m.step for m in runs.read_metrics(folder)] == [1, 2, 3, 4]
            assert runs.evaluations(folder)
        else:
            assert not runs.is_complete(folder) and [m.step for m in runs.read_metrics(folder)] == [1, 2]
            assert runs.latest_checkpoint(folder).name.endswith("2")
    assert any(line.startswith("rung 1 (2 steps): keeps 2:1:1, 1:1:1; drops 1:2:1, 1:1:2") for line in lines), lines
    status = halving.status(_StoreAt(tmp_path / "jobs", search["sweep"]), search["sweep"])
    assert status["arms"]["1:2:1"].startswith("stopped at rung 1") and status["arms"]["2:1:1"].startswith("finished")

    # the snapshot's evaluation in the pack is what `evaluate` of it writes alone
    snap = runs.snapshot_dir(folders["1:2:1"], 2)
    copy = tmp_path / "copies" / snap.name
    evaluate_copy(run_cli, snap, copy, settings.arms[2])
    assert results(snap) == results(copy)

    again = packrun.run_pack(settings, log=lines.append)
    assert again.trained == 0 and not any(e["ran"] for e in again.evaluations)
    assert len(runs.read_json(tmp_path / "jobs" / "halving" / f"{search['sweep']}.json")["rungs"]) == 2


class _StoreAt:
    """What halving.status reads of a store: its folder and the sweep's spec."""

    def __init__(self, folder: Path, sweep: str):
        self.folder, self.sweep = folder, sweep

    def sweep_spec(self, sweep_id: str) -> dict:
        return {"search": {"rungs": [2, 4]}}


def test_a_packed_search_plans_one_pack_with_its_rungs_and_refuses_packs_that_split_the_arms(env, demo_structure):
    from toolkit.study.packrun import PackSettings
    from toolkit.study.packsearch import PACK_SEARCH_HOOK
    from toolkit.study.sweep import plan_sweep

    spec = demo_spec(search={"kind": "halving", "rungs": [10, 20]}, train={"max_steps": 20, "batch_size": 4}, pack=True,
                     reference=False)
    [job] = plan_sweep(spec, structure=demo_structure).jobs
    assert job.kind == "pack" and len(job.arms) == 6 and job.meta["rungs"] == [10] and \
        job.meta["on_finish"] == PACK_SEARCH_HOOK
    packed = PackSettings.from_json(job.steps[0][5])
    assert packed.search.search.rungs == (10, 20) and all(a.train.max_steps == 20 for a in packed.arms)
    with pytest.raises(InputError, match=r"pack size: a search inside a pack decides over all 6 arms"):
        plan_sweep(demo_spec(search={"kind": "halving", "rungs": [10, 20]}, train={"max_steps": 20, "batch_size": 4}, pack=True,
                             pack_size=3), structure=demo_structure)


@pytest.mark.training
@pytest.mark.slow
def test_a_packed_search_through_a_worker_is_one_job_and_recorded_as_a_search(env, run_cli):
    """`sweep --pack --search halving` (3 ratios x 2 seeds, rungs 4 and 8): one job, no rung jobs queued; the
    record has both rungs; every arm either finished all 8 steps or left at rung 1 with the record's reason; the
    follow-up hook has been to the confirmation (queued, or said why not)."""
    from toolkit import runs
    from toolkit.queue.states import JobState
    from toolkit.study import halving

    r = subprocess.run([sys.executable, "-m", "toolkit", "sweep", "--model", "demo", "--dataset", DATA, "--ratios",
                        "1:1:1,1:4:1,4:1:1", "--seeds", "2", "--budget-rank", "4", "--max-steps", "8",
                        "--batch-size", "4", "--lr", "5e-3", "--eval-limit", "16", "--search", "halving", "--rungs",
                        "4,8", "--eta", "1.5", "--no-reference", "--gpus-per-job", "0", "--pack", "--no-worker",
                        "--json"], cwd=ROOT, capture_output=True, text=True, env=os.environ.copy(), timeout=PATIENCE)
    assert r.returncode == 0, r.stderr
    sweep = json.loads(r.stdout)["sweep"]
    assert env.worker("--threads", "1", "--once").wait(timeout=PATIENCE) == 0
    [job] = env.store.list(sweep=sweep)
    assert job.state is JobState.SUCCEEDED, (job.message, open(job.log_path).read()[-3000:])
    status = halving.status(env.store, sweep)
    assert [(e["rung"], e["final"]) for e in status["rungs"]] == [(1, False), (2, True)]
    kept = {d["arm"] for d in status["rungs"][0]["decisions"] if d["keep"]}
    assert "1:1:1" in kept and set(status["arms"]) == {"1:1:1", "1:4:1", "4:1:1"}
    for arm in job.meta["arms"]:
        folder = Path(arm["output_dir"])
        assert runs.is_complete(runs.snapshot_dir(folder, 4))
        assert runs.is_complete(folder) == (arm["ratio"] in kept)
        assert status["arms"][arm["ratio"]].startswith("finished" if arm["ratio"] in kept else "stopped at rung 1")
    record = runs.read_json(halving.record_path(env.store, sweep))
    assert "confirmation" in record  # the hook ran: queued, or the reason there is nothing to confirm
