"""The Slurm executor against a real Slurm: the single-node cluster with accounting and two fake GPUs that
scripts/slurm_ci.sh starts in the network namespace `ci` (.ci/run does; it exports CMBA_SLURM_NETNS and
SLURM_CONF). Without such a cluster these tests skip, saying why; the pure parts (state mapping, resource
checks, no Slurm installed) run everywhere.

Jobs are tests/helpers/jobscript.py (the stand-in for `train`: metrics, checkpoints, exit 143 on SIGTERM) or the real
`train` on the demo model (preemption); workers are real `python -m toolkit worker` processes whose
Slurm commands go through a logging wrapper (CMBA_SLURM_PREFIX), so the tests can count the status queries.
Every Slurm job a test submits is cancelled in teardown.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.helpers.jobs import Env, dead_pid, rows_written
from tests.helpers.jobscript import PATIENCE, job_steps, wait_for
from toolkit import cli
from toolkit.errors import InputError
from toolkit.queue.slurm import cluster as slurm
from toolkit.queue.slurm.cluster import SlurmResources
from toolkit.queue.slurm.executor import interpret
from toolkit.queue.states import JobState
from toolkit.queue.store import NewJob, WorkerInfo
from toolkit.study.sweep import SweepSpec, plan_sweep

CLUSTER_VARS = ("CMBA_SLURM_NETNS", "CMBA_SLURM_PREFIX")


def _cluster_problem() -> str | None:
    if not any(os.environ.get(v) for v in CLUSTER_VARS):
        why = os.environ.get("CMBA_SLURM_CI_ERROR")
        return ("no Slurm cluster: CMBA_SLURM_NETNS is not set (.ci/run starts one with scripts/slurm_ci.sh"
                + (f"; it could not start: {why})" if why else ", then exports it)"))
    return slurm.slurm_problem(cluster=True)


_PROBLEM = _cluster_problem()


def needs_cluster(test):
    """Runs on the test Slurm cluster: marked `slurm` (`make test-fast` leaves it out), skipped without one."""
    return pytest.mark.slurm(pytest.mark.skipif(_PROBLEM is not None, reason=str(_PROBLEM))(test))


def real(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """A Slurm command through the real prefix (not the test's logging wrapper)."""
    proc = subprocess.run([*slurm.prefix(), *args], capture_output=True, text=True, timeout=PATIENCE)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {proc.stderr.strip()}")
    return proc


def sacct_state(engine_id: str) -> str:
    out = real("sacct", "-X", "-n", "-P", "-j", engine_id, "-o", "State").stdout.splitlines()
    return out[-1].strip() if out else ""


class SlurmEnv(Env):
    """Env of test_jobs, plus a logging prefix for the workers' Slurm commands and scancel in teardown."""

    def __init__(self, tmp: Path, prefix: list[str]):
        super().__init__(tmp)
        self.calls = tmp / "slurm-calls.log"
        self.wrapper = tmp / "slurm-prefix.sh"
        self.wrapper.write_text(f'#!/bin/bash\necho "$*" >> {shlex.quote(str(self.calls))}\n'
                                f'exec {shlex.join(prefix)} "$@"\n')
        self.wrapper.chmod(0o755)

    def slurm_job(self, name: str, *extra: str, steps: int = 10, step_time: float = 0.05, resources=None,
                  more_steps=(), **kw) -> str:
        out = self.out(name)
        res = SlurmResources(**(resources or {"gpus_per_node": 0}))
        return self.store.submit(NewJob(
            name=name, steps=job_steps(out, *extra, steps=steps, step_time=step_time) + list(more_steps),
            output_dir=str(out), executor="slurm", resources=res.to_dict(), gpus=res.gpus, **kw)).id

    def status_calls(self) -> list[list[str]]:
        """The workers' squeue and sacct command lines, in order."""
        if not self.calls.exists():
            return []
        return [line.split() for line in self.calls.read_text().splitlines() if line.split()[:1] in (["sacct"], ["squeue"])]

    def cleanup(self) -> None:
        super().cleanup()
        if (self.jobs / "jobs.db").exists():
            for job in self.store.list():
                real("scancel", f"--name=cmba-{job.id}", check=False)


@pytest.fixture
def senv(tmp_path, monkeypatch):
    prefix = slurm.prefix()
    e = SlurmEnv(tmp_path, prefix)
    monkeypatch.setenv("CMBA_JOBS_DIR", str(e.jobs))
    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(e.adapters))
    monkeypatch.setenv("CMBA_SLURM_PREFIX", str(e.wrapper))
    monkeypatch.setenv("CMBA_SLURM_POLL_S", "0.3")
    yield e
    monkeypatch.setenv("CMBA_SLURM_PREFIX", shlex.join(prefix))
    e.cleanup()
    if (e.jobs / "jobs.db").exists():
        assert e.store.integrity_check() == "ok"


def states_seen(env: Env, job_id: str, until: set[str], timeout: float = PATIENCE) -> list[str]:
    """The distinct states the job goes through (in order) until one of `until`."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = env.store.get(job_id).state.value
        if not seen or seen[-1] != state:
            seen.append(state)
        if state in until:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {until}; seen {seen}")


# ------------------------------------------------------------------------------------ no cluster needed

@pytest.mark.parametrize("state,exit_code,runner,expected", [
    ("PENDING", "0:0", None, {"done": False, "queued": True, "reason": None}),
    ("REQUEUED", "0:0", None, {"done": False, "queued": True, "reason": "requeued by Slurm"}),
    ("RUNNING", "0:0", None, {"done": False, "queued": False}),
    ("COMPLETED", "0:0", 0, {"done": True, "returncode": 0, "resume": False}),
    ("FAILED", "15:0", 143, {"done": True, "returncode": 143, "resume": True}),  # sacct says 15, the runner 143
    ("FAILED", "7:0", None, {"done": True, "returncode": 7, "resume": False}),
    ("FAILED", "0:9", None, {"done": True, "returncode": -9, "resume": False}),
    ("OUT_OF_MEMORY", "0:125", None, {"done": True, "reason": "out_of_memory", "resume": False}),
    ("PREEMPTED", "0:15", None, {"done": True, "reason": "preempted", "resume": True}),
    ("NODE_FAIL", "0:0", None, {"done": True, "reason": "node failure", "resume": True}),
    ("CANCELLED by 0", "0:15", None, {"done": True, "reason": "cancelled in Slurm (scancel)", "resume": False}),
])
def test_engine_states_map_onto_ours(state, exit_code, runner, expected):
    status = interpret(state, exit_code, runner_code=runner)
    assert {k: getattr(status, k) for k in expected} == expected


def test_timeout_resumes_only_with_a_checkpoint():
    assert interpret("TIMEOUT", "0:15", has_checkpoint=True).resume
    without = interpret("TIMEOUT", "0:15", has_checkpoint=False)
    assert without.done and not without.resume and "no checkpoint" in without.reason


@pytest.mark.parametrize("fields,match", [
    ({"time": "0"}, r"time: the time limit must be more than 0"),
    ({"time": "0:00:00"}, r"time: the time limit must be more than 0"),
    ({"time": "soon"}, r"time: 'soon' is not a Slurm time limit"),
    ({"mem": "lots"}, r"mem: 'lots' is not a memory size"),
    ({"gpus_per_node": -1}, r"gpus per node: must be a whole number in 0..64"),
    ({"nodes": 0}, r"nodes: must be a whole number in 1..1024"),
    ({"nodes": 2, "gpus_per_node": 0}, r"nodes: a job on several nodes trains with DDP"),
    ({"extra": "--output=/tmp/x"}, r"sbatch options: '--output' is set by the toolkit"),
    ({"extra": "qos=high"}, r"sbatch options: 'qos=high' is not an option"),
    ({"partition": "a b"}, r"partition: 'a b' is not a partition name"),
])
def test_bad_resources_are_one_line(fields, match):
    with pytest.raises(InputError, match=match) as info:
        SlurmResources(**fields)
    assert "\n" not in str(info.value)


def test_resources_become_sbatch_options():
    res = SlurmResources(partition="gpu", nodes=2, gpus_per_node=4, cpus_per_gpu=8, mem="64G", time="1-12:00:00",
                         extra="--qos=high --account=lab")
    assert res.gpus == 8 and slurm.parse_time(res.time) == 36 * 60
    assert res.sbatch_args() == ["--nodes=2", "--ntasks-per-node=1", "--partition=gpu", "--gpus-per-node=4",
                                 "--cpus-per-gpu=8", "--mem=64G", "--time=1-12:00:00", "--qos=high", "--account=lab"]
    assert SlurmResources.from_dict(res.to_dict()) == res
    cpu = SlurmResources(gpus_per_node=0, cpus_per_gpu=4)
    assert "--cpus-per-task=4" in cpu.sbatch_args() and not any("gpu" in a for a in cpu.sbatch_args())


def test_no_slurm_installed_explains_what_is_needed(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, sacct, ... anywhere
    monkeypatch.setenv("CMBA_JOBS_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(tmp_path / "adapters"))
    with pytest.raises(InputError, match=r"executor: slurm needs the Slurm client commands .*slurm-client.*SLURM_CONF"
                                         r".*not found here: sbatch") as info:
        SweepSpec.build(model="demo", dataset="synthetic:shapes", ratios="1:1:1", budget_kind="rank", budgets="4",
                        executor="slurm")
    assert "\n" not in str(info.value) and rows_written(tmp_path / "jobs") == 0
    with pytest.raises(InputError, match=r"executor: slurm needs"):  # GPUs given: still refused at planning
        plan_sweep(SweepSpec.build(model="demo", dataset="synthetic:shapes", ratios="1:1:1", budget_kind="rank",
                                   budgets="4", executor="slurm", slurm={"gpus_per_node": 0}))
    assert rows_written(tmp_path / "jobs") == 0


def test_slurm_flags_need_the_slurm_executor(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CMBA_JOBS_DIR", str(tmp_path / "jobs"))
    code = cli.main(["sweep", "--model", "demo", "--dataset", "synthetic:shapes", "--ratios", "1:1:1",
                     "--budget-rank", "4", "--partition", "gpu", "--no-worker"])
    assert code == 2 and capsys.readouterr().err == "error: partition: only with --executor slurm\n"


def test_a_store_of_the_previous_schema_is_migrated(tmp_path):
    import sqlite3

    from toolkit.queue.store import SCHEMA_VERSION, JobStore

    store = JobStore(tmp_path)
    old = store.submit(NewJob(name="before", steps=[["true"]]))
    db = sqlite3.connect(tmp_path / "jobs.db")  # back to version 1: no executor, resources, engine_id
    db.execute("DROP INDEX jobs_by_executor")
    for column in ("executor", "resources", "engine_id"):
        db.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    store = JobStore(tmp_path)
    assert store.get(old.id).executor == "local" and store.get(old.id).resources == {}
    new = store.submit(NewJob(name="after", steps=[["true"]], executor="slurm", resources={"gpus_per_node": 1}))
    assert store.get(new.id).resources == {"gpus_per_node": 1} and store.integrity_check() == "ok"
    db = sqlite3.connect(tmp_path / "jobs.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


# ------------------------------------------------------------------------------------- a real cluster

@needs_cluster
def test_job_goes_queued_running_succeeded_with_one_status_query_per_tick(senv):
    marker = senv.tmp / "evaluated"
    second = ["{python}", "-c", f"open({str(marker)!r}, 'a').write('x')"]
    ids = [senv.slurm_job(f"ok{i}", steps=20, step_time=0.1, more_steps=[second] if i == 0 else ())
           for i in range(3)]
    senv.worker("--once")
    seen = states_seen(senv, ids[0], {"succeeded", "failed", "cancelled"})
    assert seen == ["queued", "running", "succeeded"]
    wait_for(lambda: all(senv.store.get(i).state is JobState.SUCCEEDED for i in ids), what="all three")
    job = senv.store.get(ids[0])
    assert job.executor == "slurm" and job.engine_id and job.exit_code == 0 and job.attempts == 1
    assert job.step_index == 1 and marker.read_text() == "x"  # the second step ran, once
    log = Path(job.log_path).read_text()
    assert f"submitted to Slurm as job {job.engine_id}" in log and f"Slurm job {job.engine_id} on" in log
    assert "step 2/2" in log and log.count("training from step 0 to 20") == 1
    metrics = [json.loads(x) for x in (senv.out("ok0") / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 21))
    # batched polling: one squeue per tick for every job the worker follows (sacct only for ended ones)
    ids_of = [(c[0], set(c[c.index("-j") + 1].split(","))) for c in senv.status_calls()]
    engine_ids = {senv.store.get(i).engine_id for i in ids}
    squeues = [listed for cmd, listed in ids_of if cmd == "squeue"]
    assert sum(listed == engine_ids for listed in squeues) >= 3  # the ticks while all three ran: one call each
    assert all(listed <= engine_ids for _, listed in ids_of)
    assert len([1 for cmd, _ in ids_of if cmd == "sacct"]) <= len(squeues)
    sbatch = [line.split() for line in senv.calls.read_text().splitlines() if line.startswith("sbatch ")]
    assert len(sbatch) == 3 and all({"--requeue", "--signal=USR2@90", "--open-mode=append"} <= set(c) for c in sbatch)


@needs_cluster
def test_failing_job_ends_failed_with_its_exit_code(senv):
    job_id = senv.slurm_job("bad", "--fail-at", "3", "--exit-code", "7", "--message", "error: dataset: boom")
    senv.worker("--once")
    wait_for(lambda: senv.store.get(job_id).state.finished, what="the job to end")
    job = senv.store.get(job_id)
    assert (job.state, job.reason, job.exit_code, job.message, job.attempts) == (
        JobState.FAILED, "exit code 7", 7, "error: dataset: boom", 1)
    assert sacct_state(job.engine_id) == "FAILED"


@needs_cluster
def test_three_one_gpu_jobs_on_two_gpus_and_cancel_queued_and_running(senv):
    gpu = {"gpus_per_node": 1}
    ids = [senv.slurm_job(f"gpu{i}", steps=600, step_time=0.05, resources=gpu) for i in range(3)]
    senv.worker()
    wait_for(lambda: len(senv.runs("gpu0")) + len(senv.runs("gpu1")) + len(senv.runs("gpu2")) == 2,
             what="two jobs to start")
    time.sleep(1.5)  # the third stays waiting for a GPU
    running = [n for n in ("gpu0", "gpu1", "gpu2") if senv.runs(n)]
    [waiting] = [i for i, n in zip(ids, ("gpu0", "gpu1", "gpu2")) if n not in running]
    assert sorted(senv.runs(n)[0]["cuda_visible"] for n in running) == ["0", "1"]  # different GPUs
    queued = senv.store.get(waiting)
    assert queued.state is JobState.QUEUED and queued.engine_id  # submitted, waiting in Slurm's queue
    squeue = real("squeue", "-h", "-j", queued.engine_id, "-o", "%T|%r").stdout.strip()
    assert squeue.startswith("PENDING|") and "Resources" in squeue

    senv.store.request_cancel(waiting)  # cancel of a queued job: it never starts
    wait_for(lambda: senv.store.get(waiting).state is JobState.CANCELLED, what="the queued cancel")
    first = next(i for i, n in zip(ids, ("gpu0", "gpu1", "gpu2")) if n == running[0])
    senv.store.request_cancel(first)  # cancel of a running job: SIGTERM, checkpoint, exit 143
    wait_for(lambda: senv.store.get(first).state is JobState.CANCELLED, what="the running cancel")
    done = senv.store.get(first)
    assert done.reason == "cancelled by user" and done.exit_code == 143
    assert "SIGTERM: saved checkpoint" in Path(done.log_path).read_text()
    wait_for(lambda: sacct_state(queued.engine_id).startswith("CANCELLED"), what="sacct's cancel")
    time.sleep(1.5)  # a GPU is free now: the cancelled job must still not start
    assert senv.runs([n for n in ("gpu0", "gpu1", "gpu2") if n not in running][0]) == []
    assert sacct_state(queued.engine_id).startswith("CANCELLED")


@pytest.mark.slow
@pytest.mark.training
@needs_cluster
def test_a_halving_search_runs_its_rungs_on_slurm(senv):
    """The controller queues the survivors of a Slurm sweep as Slurm jobs that resume from the rung's checkpoint."""
    from toolkit.study import halving

    r = subprocess.run([sys.executable, "-m", "toolkit", "sweep", "--model", "demo", "--dataset", "synthetic:shapes?n=64",
                        "--ratios", "1:1:1,1:4:1,4:1:1", "--budget-rank", "8", "--max-steps", "8", "--batch-size", "4",
                        "--lr", "5e-3", "--eval-limit", "12", "--search", "halving", "--rungs", "4,8", "--eta", "1.5",
                        "--no-confirm", "--no-reference", "--executor", "slurm", "--gpus-per-node", "0", "--time", "10",
                        "--no-worker", "--json"], cwd=ROOT, capture_output=True, text=True, env=os.environ.copy(),
                       timeout=PATIENCE)
    assert r.returncode == 0, r.stderr
    sweep = json.loads(r.stdout)["sweep"]
    assert senv.worker("--once").wait(PATIENCE) == 0
    jobs = senv.store.list(sweep=sweep)
    assert {j.state for j in jobs} == {JobState.SUCCEEDED}, [(j.name, j.state.value, j.message) for j in jobs]
    assert {j.executor for j in jobs} == {"slurm"} and all(j.engine_id for j in jobs)  # rung 2 went to Slurm too
    assert [e["rung"] for e in halving.status(senv.store, sweep)["rungs"]] == [1, 2]
    second = [j for j in jobs if j.meta["rung"] == 2]
    assert 2 <= len(second) <= 3
    for j in second:  # resumed in the same run folder from the rung-1 checkpoint: one metrics file, steps 1..8
        steps = [json.loads(line)["step"] for line in open(Path(j.output_dir) / "metrics.jsonl")]
        assert steps == list(range(1, 9)) and j.resources == jobs[0].resources
        assert json.loads((Path(j.output_dir) / "cmba.json").read_text())["result"]["steps"] == 8


@pytest.mark.slow
@pytest.mark.training
@needs_cluster
def test_a_packed_sweep_runs_one_sbatch_per_pack(senv):
    """`sweep --pack --pack-size 2 --executor slurm`: 2 ratios x 2 seeds make two pack jobs, each one Slurm job
    whose one step trains its two arms in one process and evaluates them; every arm ends complete and scored."""
    r = subprocess.run([sys.executable, "-m", "toolkit", "sweep", "--model", "demo", "--dataset", "synthetic:shapes?n=64",
                        "--ratios", "1:1:1,1:4:1", "--seeds", "2", "--budget-rank", "4", "--max-steps", "4",
                        "--batch-size", "4", "--eval-limit", "8", "--no-reference", "--pack", "--pack-size", "2",
                        "--executor", "slurm", "--gpus-per-node", "0", "--time", "10", "--no-worker", "--json"],
                       cwd=ROOT, capture_output=True, text=True, env=os.environ.copy(), timeout=PATIENCE)
    assert r.returncode == 0, r.stderr
    sweep = json.loads(r.stdout)["sweep"]
    assert senv.worker("--once").wait(PATIENCE) == 0
    jobs = senv.store.list(sweep=sweep)
    assert len(jobs) == 2 and {j.state for j in jobs} == {JobState.SUCCEEDED}, [
        (j.name, j.state.value, j.message) for j in jobs]
    assert {j.executor for j in jobs} == {"slurm"} and len({j.engine_id for j in jobs}) == 2
    for job in jobs:
        assert "pack of 2 arms on one llava base: fused" in open(job.log_path).read()
        for arm in job.meta["arms"]:
            folder = Path(arm["output_dir"])
            assert json.loads((folder / "cmba.json").read_text())["result"]["steps"] == 4
            [results] = folder.glob("eval/*/results.json")
            assert json.loads(results.read_text())["scores"]["n"] == 8


@pytest.mark.slow
@needs_cluster
def test_preemption_signal_resumes_real_training_from_its_checkpoint(senv):
    steps = 20
    r = subprocess.run([sys.executable, "-m", "toolkit", "sweep", "--model", "demo", "--dataset",
                        "synthetic:shapes?n=64", "--ratios", "1:4:1", "--budget-rank", "4", "--max-steps", str(steps),
                        "--batch-size", "4", "--checkpoint-every", "5", "--no-eval", "--executor", "slurm",
                        "--gpus-per-node", "0", "--time", "10", "--no-worker", "--json"],
                       cwd=ROOT, capture_output=True, text=True, env=os.environ.copy(), timeout=PATIENCE)
    assert r.returncode == 0, r.stderr
    [job_id] = [j["job"] for j in json.loads(r.stdout)["jobs"]]
    job = senv.store.get(job_id)
    assert job.executor == "slurm" and job.resources["time"] == "10"
    metrics = Path(job.output_dir) / "metrics.jsonl"

    def steps_done():
        return len(metrics.read_text().splitlines()) if metrics.exists() else 0

    senv.worker("--once")
    wait_for(lambda: steps_done() >= 6, what="6 training steps")
    first = senv.store.get(job_id).engine_id
    real("scancel", "--signal=USR2", first)  # what Slurm sends before preempting (or at the time limit)
    wait_for(lambda: senv.store.get(job_id).engine_id not in (None, first), what="the resubmission")
    assert senv.store.get(job_id).attempts == 2
    assert f"job {job_id}: queued (interrupted by Slurm (checkpoint saved))" in (senv.tmp / "worker-0.log").read_text()
    wait_for(lambda: senv.store.get(job_id).state.finished, what="the resumed training")
    job = senv.store.get(job_id)
    assert job.state is JobState.SUCCEEDED, job.message
    cmba = json.loads((Path(job.output_dir) / "cmba.json").read_text())
    assert cmba["result"]["steps"] == steps
    assert [json.loads(x)["step"] for x in metrics.read_text().splitlines()] == list(range(1, steps + 1))
    log = Path(job.log_path).read_text()
    assert "stopped: interrupted by SIGUSR2" in log and "resuming" in log and "from step" in log


@pytest.mark.slow
@needs_cluster
def test_two_gpu_slurm_job_trains_with_ddp_through_srun(senv, capsys):
    code = cli.main(["sweep", "--model", "demo", "--dataset", "synthetic:shapes?n=48&seed=1", "--ratios", "1:4:1",
                     "--budget-rank", "4", "--max-steps", "6", "--batch-size", "2", "--grad-accum", "2", "--no-eval",
                     "--executor", "slurm", "--gpus-per-node", "2", "--cpus-per-gpu", "1", "--time", "5",
                     "--no-worker", "--json"])
    assert code == 0
    [job_id] = [j["job"] for j in json.loads(capsys.readouterr().out)["jobs"]]
    job = senv.store.get(job_id)
    assert job.gpus == 2 and job.steps[0][1:3] == ("-m", "toolkit.training.distributed")
    senv.worker("--once")
    wait_for(lambda: senv.store.get(job_id).state.finished, what="the DDP job")
    job = senv.store.get(job_id)
    assert job.state is JobState.SUCCEEDED, job.message
    assert job.gpu_ids == "0,1" and "2 processes (1 node(s) x 2)" in Path(job.log_path).read_text()
    cmba = json.loads((Path(job.output_dir) / "cmba.json").read_text())
    assert cmba["result"]["distributed"]["world_size"] == 2 and cmba["training"]["batch_size"] == 2
    assert [json.loads(x)["step"] for x in (Path(job.output_dir) / "metrics.jsonl").read_text().splitlines()] == \
        list(range(1, 7))


def _release(engine_id: str) -> bool:
    """Ask Slurm to start a requeued job now instead of after its ~2 min BeginTime; always True (for wait_for)."""
    real("scontrol", "update", f"JobId={engine_id}", "StartTime=now", check=False)
    time.sleep(0.5)
    return True


@needs_cluster
def test_requeue_resumes_and_a_requeue_after_the_end_trains_nothing_twice(senv):
    job_id = senv.slurm_job("rq", steps=50, step_time=0.05)
    senv.worker()
    wait_for(lambda: (senv.out("rq") / "checkpoints").exists() and len(senv.runs("rq")) == 1,
             what="training with a checkpoint")
    # the store says queued until a poll sees Slurm run it: wait for that, or "queued" below proves nothing
    wait_for(lambda: senv.store.get(job_id).state is JobState.RUNNING, what="our state to say running")
    engine_id = senv.store.get(job_id).engine_id
    real("scontrol", "requeue", engine_id)  # Slurm stops it (SIGTERM: checkpoint) and queues it again
    wait_for(lambda: senv.store.get(job_id).state is JobState.QUEUED, what="our state to follow")
    assert senv.store.get(job_id).reason == "requeued by Slurm"
    # a requeued job waits for a BeginTime about two minutes ahead; let it go now
    # (repeated: an update that lands before the requeue has set its BeginTime is overwritten by it)
    wait_for(lambda: _release(engine_id) and senv.store.get(job_id).state is JobState.SUCCEEDED,
             what="the requeued run")
    job = senv.store.get(job_id)
    assert job.engine_id == engine_id and job.attempts == 1  # Slurm's requeue, same Slurm job
    runs = senv.runs("rq")
    assert len(runs) == 2 and runs[1]["start_step"] > 0  # resumed from the checkpoint, not from scratch
    assert [json.loads(x)["step"] for x in (senv.out("rq") / "metrics.jsonl").read_text().splitlines()][-1] == 50

    # the job has finished; a requeue racing that end must not train it again
    real("scontrol", "requeue", engine_id)
    wait_for(lambda: _release(engine_id) and "nothing to run" in Path(job.log_path).read_text(),
             what="the rerun of the batch")
    wait_for(lambda: sacct_state(engine_id) == "COMPLETED", what="sacct")
    assert len(senv.runs("rq")) == 2 and senv.store.get(job_id).state is JobState.SUCCEEDED


@needs_cluster
def test_lost_job_slurm_no_longer_knows_is_resubmitted_up_to_the_cap(senv, monkeypatch):
    monkeypatch.setenv("CMBA_SLURM_LOST_S", "2")
    store = senv.store
    ghost = WorkerInfo(id="ghost", pid=dead_pid(), start_time=1, host=os.uname().nodename)
    ids = {}
    for name, cap in (("lost", 3), ("capped", 1)):
        ids[name] = senv.slurm_job(name, steps=5, max_attempts=cap)
        claimed = store.claim(ghost, max_gpus=99, executor="slurm")  # as if the ghost had submitted it, ...
        assert claimed.id == ids[name]
        assert store.set_process(claimed.id, claimed.token, pid=None, pid_start=None, step_index=0,
                                 engine_id=str(990000 + len(ids)))  # ... as a job id Slurm never had
    senv.worker("--once")
    wait_for(lambda: all(store.get(i).state.finished for i in ids.values()), what="both jobs")
    lost, capped = store.get(ids["lost"]), store.get(ids["capped"])
    assert lost.state is JobState.SUCCEEDED and lost.attempts == 2 and not lost.engine_id.startswith("9900")
    assert len(senv.runs("lost")) == 1
    assert capped.state is JobState.FAILED and capped.reason == "lost (Slurm no longer knows the job)"
    assert "gave up after 1 of 1 attempts" in capped.message and senv.runs("capped") == []


@needs_cluster
def test_new_worker_adopts_a_running_slurm_job(senv):
    job_id = senv.slurm_job("adopt", steps=80, step_time=0.05)
    first = senv.worker()
    wait_for(lambda: senv.store.get(job_id).state is JobState.RUNNING, what="the job to run")
    os.killpg(first.pid, 9)
    first.wait()
    senv.worker("--once")
    wait_for(lambda: senv.store.get(job_id).state.finished, what="the adopted job")
    job = senv.store.get(job_id)
    assert job.state is JobState.SUCCEEDED and job.attempts == 1 and len(senv.runs("adopt")) == 1


@needs_cluster
@pytest.mark.parametrize("flags,match", [
    (["--partition", "nope"], r"error: partition: 'nope' is not a partition of this cluster \(it has: debug\)"),
    (["--gpus-per-node", "3"], r"error: gpus per node: 3 asked for, but the nodes of partition 'debug' have at most 2"),
    (["--time", "0"], r"error: time: the time limit must be more than 0"),
    (["--nodes", "2", "--gpus-per-node", "1"], r"error: nodes: 2 asked for, but partition 'debug' has 1"),
    (["--mem", "900G"], r"error: mem: 900G asked for, but the nodes of partition 'debug' have at most 8000 MB"),
    (["--sbatch-extra=--constraint=nosuch"], r"error: slurm: sbatch refuses this request: .*"),
])
def test_bad_slurm_requests_fail_at_submission_with_nothing_queued(senv, capsys, flags, match):
    code = cli.main(["sweep", "--model", "demo", "--dataset", "synthetic:shapes", "--ratios", "1:1:1",
                     "--budget-rank", "4", "--executor", "slurm", "--no-worker", *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert re.match(match, err), err
    assert rows_written(senv.jobs) == 0


@needs_cluster
def test_jobs_page_shows_a_slurm_job_and_plans_slurm_sweeps(senv, demo_structure):
    from streamlit.testing.v1 import AppTest

    plan = plan_sweep(SweepSpec.build(model="demo", dataset="synthetic:shapes", ratios="1:1:1", budget_kind="rank",
                                      budgets="4", train={"max_steps": 5}, evaluate=False,
                                      executor="slurm", slurm={"gpus_per_node": 1}), structure=demo_structure)
    [planned] = plan.jobs
    senv.store.submit_sweep(plan.sweep_id, plan.spec.normalised(), [
        NewJob(id=planned.id, name=planned.name, steps=job_steps(planned.output_dir, steps=8), executor="slurm",
               output_dir=planned.output_dir, gpus=1, resources=plan.spec.slurm.to_dict())])
    senv.worker("--once")
    wait_for(lambda: senv.store.get(planned.id).state.finished, what="the job")
    job = senv.store.get(planned.id)
    assert job.state is JobState.SUCCEEDED and job.gpu_ids in ("0", "1")

    at = AppTest.from_file(str(ROOT / "app_pages" / "jobs.py"), default_timeout=PATIENCE)
    at.run()
    assert not at.exception and not at.error
    table = at.dataframe[1].value.set_index("job")
    assert table.loc[job.id, "state"] == "succeeded" and table.loc[job.id, "runs on"] == f"slurm {job.engine_id}"
    assert table.loc[job.id, "progress"] == 1.0 and table.loc[job.id, "step"] == "8/8"
    assert f"Slurm job {job.engine_id} on" in at.code[0].value  # its log, as for a local job
    at.radio(key="jobs_executor").set_value("slurm").run()
    assert not at.exception and not at.error
    at.number_input(key="jobs_gpus_per_node").set_value(1).run()
    assert any("Slurm: `--nodes=1 --ntasks-per-node=1 --gpus-per-node=1`" in c.value for c in at.caption)
    at.number_input(key="jobs_gpus_per_node").set_value(5).run()
    assert [e.value for e in at.error] == ["gpus per node: 5 asked for, but the nodes of partition 'debug' have at "
                                           "most 2 GPUs"]


@pytest.fixture(scope="module")
def demo_structure():
    from toolkit.calculator.structure import load_structure

    return load_structure("demo")

