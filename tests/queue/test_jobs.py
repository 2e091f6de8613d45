"""The job system with real processes and a real SQLite store: claims, sweeps, cancel, retry, crash recovery.

Jobs here run tests/helpers/jobscript.py (a stand-in for `train` with the same checkpoint / metrics / exit-code
behaviour); workers are real `python -m toolkit worker` processes. Every process a test starts is
killed in teardown, and every store passes `PRAGMA integrity_check` at the end of its test.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
from pathlib import Path

import pytest

from tests.helpers import jobscript as jobhelpers
from tests.helpers.jobs import dead_pid, demo_spec, rows_written, state_of
from tests.helpers.jobscript import PATIENCE, job_steps, wait_for  # noqa: F401  (wait_for: imported by other test files)
from toolkit.errors import CmbaError, InputError
from toolkit.queue.executor import process_alive, process_group_members
from toolkit.queue.lifecycle import ensure_worker, live_workers
from toolkit.queue.states import JobState
from toolkit.queue.store import JobStore, NewJob, WorkerInfo
from toolkit.queue.worker import Worker, WorkerConfig
from toolkit.study.progress import job_progress
from toolkit.study.sweep import plan_sweep, submit_sweep
from toolkit.training.settings import TrainSettings

ROOT = Path(__file__).resolve().parents[2]
FORK = multiprocessing.get_context("fork")


# --------------------------------------------------------------------------------------- the store

def test_claims_are_atomic_across_processes(env):
    store = env.store
    for i in range(120):
        store.submit(NewJob(name=f"job-{i}", steps=[["true"]]))
    procs = [FORK.Process(target=jobhelpers.claim_all, args=(str(env.jobs), str(env.tmp / f"claims-{k}.json")))
             for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(PATIENCE)
        assert p.exitcode == 0
    claims = [json.loads((env.tmp / f"claims-{k}.json").read_text()) for k in range(4)]
    everything = [c for part in claims for c in part]
    assert len(everything) == 120 and len(set(everything)) == 120  # every job claimed once, by one process
    assert store.counts() == {"running": 120}
    assert all(j.attempts == 1 and j.token for j in store.list())


def test_concurrent_submissions_are_stored_exactly_once(env):
    # no store yet: the processes also race to create the database and its schema
    procs = [FORK.Process(target=jobhelpers.submit_many, args=(str(env.jobs), f"p{k}", 25)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(PATIENCE)
        assert p.exitcode == 0
    jobs = env.store.list()
    names = sorted(j.name for j in jobs)
    assert names == sorted(f"p{k}-{i}" for k in range(4) for i in range(25))
    assert len({j.id for j in jobs}) == 100
    assert all(j.state is JobState.QUEUED for j in jobs)


def test_stale_claim_token_cannot_write(env):
    store = env.store
    job_id = env.job("a")
    ghost = WorkerInfo(id="ghost", pid=dead_pid(), start_time=1, host=os.uname().nodename)
    first = store.claim(ghost)
    # A live worker finds the ghost's job and re-queues it; a second claim gets a new token.
    worker = Worker(store, WorkerConfig(gpus="none", slots=1))
    assert worker.recover() == [(job_id, "queued")]
    second = store.claim(worker.info)
    assert second.id == job_id and second.token != first.token and second.attempts == 2
    assert not store.finish(job_id, first.token, JobState.SUCCEEDED)  # the ghost comes back: refused
    assert not store.set_process(job_id, first.token, pid=1, pid_start=1, step_index=0)
    assert store.heartbeat(ghost, {job_id: first.token}) == {job_id}
    assert store.get(job_id).state is JobState.RUNNING
    assert store.finish(job_id, second.token, JobState.SUCCEEDED)
    assert store.get(job_id).state is JobState.SUCCEEDED


def test_attempt_cap_fails_with_worker_lost(env):
    store = env.store
    job_id = env.job("capped", max_attempts=2)
    worker = Worker(store, WorkerConfig(gpus="none", slots=1))
    for expected in ("queued", "failed"):
        ghost = WorkerInfo(id="ghost", pid=dead_pid(), start_time=1, host=worker.info.host)
        assert store.claim(ghost).id == job_id
        assert worker.recover() == [(job_id, expected)]
    job = store.get(job_id)
    assert job.reason == "worker lost" and job.attempts == 2 and "2 of 2 attempts" in job.message
    assert store.claim(worker.info) is None


def test_cancel_queued_then_finished_is_an_error(env):
    store = env.store
    queued = env.job("q")
    assert store.request_cancel(queued).state is JobState.CANCELLED
    with pytest.raises(InputError, match=r"already cancelled; only queued or running"):
        store.request_cancel(queued)
    done = env.job("d")
    claimed = store.claim(WorkerInfo(id="w", pid=os.getpid(), start_time=None, host="h"))
    assert claimed.id == done and store.finish(done, claimed.token, JobState.SUCCEEDED)
    with pytest.raises(InputError, match=rf"job {done}: already succeeded"):
        store.request_cancel(done)
    with pytest.raises(InputError, match="only failed or cancelled jobs can be retried"):
        store.retry(done)
    again = store.retry(queued)
    assert again.state is JobState.QUEUED and again.retries == 1 and again.attempts == 0


def test_executors_come_from_the_registry_and_the_worker_names_none(env, monkeypatch):
    import ast

    from toolkit.queue.executor import LocalExecutor, engine_names, executor_class
    from toolkit.queue.slurm.executor import SlurmExecutor

    assert executor_class("local") is LocalExecutor and executor_class("slurm") is SlurmExecutor
    assert engine_names() == ["slurm"] and SlurmExecutor.engine and not LocalExecutor.engine
    with pytest.raises(InputError, match=r"executor: 'ray' is not one of local, slurm"):
        executor_class("ray")
    tree = ast.parse((ROOT / "toolkit" / "queue" / "worker.py").read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert imported and not [m for m in imported if "slurm" in m]
    monkeypatch.setenv("PATH", str(env.jobs))  # no sbatch here: the engine is unavailable, its jobs stay queued
    worker = Worker(env.store, WorkerConfig(gpus="none", slots=1))
    assert worker.engine("slurm") is None and "slurm" in worker.engines


# ------------------------------------------------------------------------------ workers, for real

def test_two_workers_run_each_job_once(env):
    names = [f"w{i}" for i in range(6)]
    ids = [env.job(n, steps=4, step_time=0.05) for n in names]
    first, second = env.worker("--once"), env.worker("--once", "--extra")
    assert first.wait(PATIENCE) == 0 and second.wait(PATIENCE) == 0
    store = env.store
    assert all(store.get(i).state is JobState.SUCCEEDED for i in ids)
    for n in names:
        runs = env.runs(n)
        assert len(runs) == 1  # never run twice
        assert runs[0]["omp_threads"] and runs[0]["cuda_visible"] == ""  # CPU job: threads set, no GPU
    assert store.workers() == []  # both deregistered on exit


@pytest.mark.parametrize("stubborn_leader", [False, True], ids=["checkpoints-on-sigterm", "ignores-sigterm"])
def test_cancel_running_leaves_no_processes(env, stubborn_leader):
    extra = ["--spawn-child"] + (["--ignore-term"] if stubborn_leader else [])
    job_id = env.job("c", *extra, steps=400, step_time=0.05)
    env.worker("--grace", "1" if stubborn_leader else "5")  # the cooperative job needs well under 1 s
    wait_for(lambda: (env.out("c") / "child.pid").exists(), what="the job and its child to start")
    job = env.store.get(job_id)
    child = int((env.out("c") / "child.pid").read_text())
    assert job.state is JobState.RUNNING and process_group_members(job.pid)
    assert env.store.request_cancel(job_id).cancel_requested
    wait_for(lambda: state_of(env, job_id) is JobState.CANCELLED, what="the cancel")
    done = env.store.get(job_id)
    assert done.reason == "cancelled by user"
    assert process_group_members(job.pid) == [] and not process_alive(child, None)
    if stubborn_leader:
        assert done.exit_code == -signal.SIGKILL
    else:  # it saved a checkpoint at the next step boundary and exited 143
        assert done.exit_code == 143 and "SIGTERM: saved checkpoint" in (env.jobs / job_id / "log.txt").read_text()


def test_killed_job_process_is_requeued_not_left_running(env):
    """SIGKILL from outside (the OOM killer's signal) re-queues the job; tests/training/test_faults.py follows it to the
    end (resumed from its checkpoint, failed at the attempt cap)."""
    job_id = env.job("k", steps=400, step_time=0.05, max_attempts=1)
    env.worker()
    pid = wait_for(lambda: env.store.get(job_id).pid, what="the job to start")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: state_of(env, job_id) is not JobState.RUNNING, what="the worker to notice")
    job = env.store.get(job_id)
    assert job.state is JobState.FAILED and job.reason in ("killed (SIGKILL)", "out_of_memory (killed by the kernel)")
    assert job.message.startswith("gave up after 1 of 1 attempts")


@pytest.mark.parametrize("exit_code,message", [(3, "error: out_of_memory: simulated"),
                                               (1, "RuntimeError: CUDA out_of_memory. Tried to allocate 2 GiB")])
def test_out_of_memory_fails_without_retry(env, exit_code, message):
    job_id = env.job("oom", "--fail-at", "3", "--exit-code", str(exit_code), "--message", message)
    assert env.worker("--once").wait(PATIENCE) == 0
    job = env.store.get(job_id)
    assert job.state is JobState.FAILED and job.reason == "out_of_memory" and job.attempts == 1
    assert job.exit_code == exit_code and len(env.runs("oom")) == 1
    assert job.message == (message if message.startswith("error:") else None)


def test_retry_resumes_a_failed_job(env):
    job_id = env.job("r", "--fail-at", "5", "--first-run-only", "--message", "error: dataset: flaky", steps=8)
    assert env.worker("--once").wait(PATIENCE) == 0
    failed = env.store.get(job_id)
    assert failed.state is JobState.FAILED and failed.reason == "exit code 1" and failed.message == "error: dataset: flaky"
    env.store.retry(job_id)
    assert env.worker("--once").wait(PATIENCE) == 0
    job = env.store.get(job_id)
    assert job.state is JobState.SUCCEEDED and job.retries == 1 and job.attempts == 1 and job.reason is None
    runs = env.runs("r")
    assert [r["start_step"] for r in runs] == [0, 4]  # the retry resumed from the last checkpoint (step 4)
    assert [m["step"] for m in map(json.loads, (env.out("r") / "metrics.jsonl").read_text().splitlines())][-1] == 8


@pytest.mark.slow
def test_worker_killed_mid_job_is_recovered_and_resumes(env):
    steps = 60
    job_id = env.job("crash", steps=steps, step_time=0.05)
    first = env.worker()
    wait_for(lambda: (job_progress(env.store.get(job_id))["step"] or 0) >= 10, what="training to reach step 10")
    progress = job_progress(env.store.get(job_id))
    assert progress["state"] == "running" and 0 < progress["fraction"] < 1 and progress["loss"] > 0
    assert progress["max_steps"] == steps and progress["log_tail"][0].startswith("[cmba-worker")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert state_of(env, job_id) is JobState.RUNNING  # nobody has noticed yet
    assert env.worker("--once").wait(PATIENCE) == 0
    job = env.store.get(job_id)
    assert job.state is JobState.SUCCEEDED and job.attempts == 2
    runs = env.runs("crash")
    assert len(runs) == 2 and runs[1]["start_step"] >= 8  # resumed from a checkpoint, not from scratch
    metrics = [json.loads(line) for line in (env.out("crash") / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == steps and json.loads((env.out("crash") / "done.json").read_text())["steps"] == steps
    assert process_group_members(runs[0]["pgid"]) == []


def test_worker_stopped_requeues_without_spending_an_attempt(env):
    job_id = env.job("stop", steps=400, step_time=0.05)
    worker = env.worker()
    wait_for(lambda: (job_progress(env.store.get(job_id))["step"] or 0) >= 3, what="training to start")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(PATIENCE) == 0
    job = env.store.get(job_id)
    assert job.state is JobState.QUEUED and job.attempts == 0 and job.reason == "worker stopped"
    assert env.store.workers() == [] and process_group_members(env.runs("stop")[0]["pgid"]) == []


def test_steps_chain_and_retry_reruns_only_the_failed_step(env):
    out = env.out("chain")
    marker = env.tmp / "eval-failed-once"
    evaluate = ["{python}", "-c", "import pathlib, sys\n"
                f"m = pathlib.Path({str(marker)!r})\n"
                "if not m.exists():\n    m.touch(); print('error: evaluate: flaky', file=sys.stderr); sys.exit(1)\n"
                f"pathlib.Path({str(out / 'evaluated')!r}).touch()"]
    job_id = env.store.submit(NewJob(name="chain", steps=[*job_steps(out, steps=4), evaluate], output_dir=str(out))).id
    assert env.worker("--once").wait(PATIENCE) == 0
    job = env.store.get(job_id)
    assert job.state is JobState.FAILED and job.step_index == 1 and job.message == "error: evaluate: flaky"
    assert job_progress(job)["phase"] == "-c" and (out / "done.json").exists()
    env.store.retry(job_id)
    assert env.worker("--once").wait(PATIENCE) == 0
    assert env.store.get(job_id).state is JobState.SUCCEEDED and (out / "evaluated").exists()
    assert len(env.runs("chain")) == 1  # training was not run again


def test_ensure_worker_starts_exactly_one(env):
    job_id = env.job("e", steps=2000, step_time=0.05)  # keeps the worker busy until cancelled below
    results = []
    threads = [threading.Thread(target=lambda: results.append(ensure_worker(idle_exit_s=1))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    started = [r for r in results if r["started"]]
    assert len(started) == 1
    env.pids.append(started[0]["pid"])  # a session leader: teardown kills its group if it is still there
    wait_for(lambda: env.store.get(job_id).pid, what="the detached worker to start the job")
    assert [w["pid"] for w in live_workers()] == [started[0]["pid"]]
    assert ensure_worker() == {"started": False, "pid": started[0]["pid"]}
    refused = env.worker()  # a second locked worker is refused while this one lives
    assert refused.wait(PATIENCE) == 2
    assert "another worker already holds" in (env.tmp / "worker-0.log").read_text()
    env.store.request_cancel(job_id)
    wait_for(lambda: state_of(env, job_id) is JobState.CANCELLED, what="the cancel")
    wait_for(lambda: not live_workers(), what="the idle worker to deregister")
    wait_for(lambda: not process_alive(started[0]["pid"], None), what="the idle worker to exit")


# ------------------------------------------------------------------------------------------ sweeps

def test_sweep_submission_is_idempotent(env, demo_structure):
    plan = plan_sweep(demo_spec(), structure=demo_structure)
    assert len(plan.jobs) == 7 and len({j.name for j in plan.jobs}) == 7
    assert [j.kind for j in plan.jobs] == ["train"] * 6 + ["reference"]  # the base model's row, once per sweep
    reference = plan.jobs[-1].settings["evaluate"]
    assert reference["base"] == "demo" and reference["split"] == "validation" and reference["adapter"] is None
    same = plan_sweep(demo_spec(ratios="2:4:1, 1:4:1,1:1:1,1:4:1", seed_list="1,0"), structure=demo_structure)
    assert same.sweep_id == plan.sweep_id and [j.id for j in same.jobs] == [j.id for j in plan.jobs]
    assert plan_sweep(demo_spec(seeds=3), structure=demo_structure).sweep_id != plan.sweep_id
    job = next(j for j in plan.jobs if j.ratio == "1:4:1" and j.seed == 1)
    assert job.name == "demo-r1-4-1-b8-s1"
    assert job.output_dir == str(env.adapters.resolve() / f"demo-r1-4-1-b8-s1-{plan.short_id}")
    train, evaluate = job.steps
    assert train[:5] == ("{python}", "-m", "toolkit", "train", "--settings-json")
    settings = TrainSettings.from_json(train[5])  # the job's settings are data, stored beside its steps
    assert settings.resume and str(settings.ratio) == "1:4:1" and settings.max_steps == 20 and settings.seed == 1
    assert settings.to_dict() == job.settings["train"] and settings.expect_lora_sha256 == job.lora_sha256
    assert evaluate[3:5] == ("evaluate", "--settings-json") and json.loads(evaluate[5])["split"] == "validation"
    assert job.ranks[1] > job.ranks[0] and job.params > 0  # allocation shown before submitting

    # three processes submit the same sweep at once (a double click from two tabs and a CLI re-run)
    procs = [FORK.Process(target=jobhelpers.submit_plan, args=(str(env.jobs), plan)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(PATIENCE)
        assert p.exitcode == 0
    again = submit_sweep(same)
    assert not again.created
    assert len(env.store.list()) == 7 and [s["id"] for s in env.store.sweeps()] == [plan.sweep_id]
    assert sorted(j.name for j in env.store.list(sweep=plan.short_id)) == sorted(j.name for j in plan.jobs)


def test_sweep_without_eval_and_with_several_budgets(env, demo_structure):
    plan = plan_sweep(demo_spec(ratios="1:1:1", seeds=1, budgets="4,8", evaluate=False), structure=demo_structure)
    assert [j.name for j in plan.jobs] == ["demo-r1-1-1-b4-s0", "demo-r1-1-1-b8-s0"]
    assert all(len(j.steps) == 1 for j in plan.jobs)
    assert plan.jobs[1].params == 2 * plan.jobs[0].params  # uniform ranks 4:4:4 vs 8:8:8


@pytest.mark.parametrize("case,call,match", [
    ("unknown job id", lambda: JobStore().get("nope"), r"job: no job 'nope'"),
    ("cancel unknown", lambda: JobStore().request_cancel("nope"), r"job: no job 'nope'"),
    ("retry unknown", lambda: JobStore().retry("nope"), r"job: no job 'nope'"),
    ("no ratios", lambda: plan_sweep(demo_spec(ratios=" , ")), r"ratios: give at least one ratio"),
    ("malformed ratio", lambda: plan_sweep(demo_spec(ratios="1:1:1,1:4")), r"ratio: expected three numbers"),
    ("zero seeds", lambda: plan_sweep(demo_spec(seeds=0)), r"seeds: must be >= 1"),
    ("repeated seed", lambda: plan_sweep(demo_spec(seed_list="0,0")), r"seeds: .* repeats a seed"),
    ("unknown model", lambda: plan_sweep(demo_spec(model="no-such-model")), r"model: 'no-such-model' is not a preset"),
    ("more GPUs than exist", lambda: plan_sweep(demo_spec(gpus_per_job=64)), r"gpus per job: each job asks for 64"),
    ("worker GPUs", lambda: WorkerConfig(gpus="0,1,2,3,4,5,6,7,8,9").resources(), r"gpus: GPU .*9 asked for"),
    ("epochs and steps", lambda: demo_spec(train={"max_steps": 5, "epochs": 1}), r"max-steps: give either"),
    ("learning rate", lambda: demo_spec(train={"lr": "1.5"}), r"lr: must be a learning rate in \(0, 1\), got 1.5"),
])
def test_bad_input_is_one_line_and_writes_nothing(env, case, call, match):
    with pytest.raises(CmbaError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
    assert rows_written(env.jobs) == 0


def test_unwritable_jobs_folder(env, monkeypatch, demo_structure):
    blocker = env.tmp / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CMBA_JOBS_DIR", str(blocker / "jobs"))
    with pytest.raises(InputError, match=r"jobs folder: cannot write to .*CMBA_JOBS_DIR"):
        plan_sweep(demo_spec(), structure=demo_structure)
    with pytest.raises(InputError, match=r"jobs folder: cannot write"):
        JobStore()
    assert not (blocker / "jobs").exists() and rows_written(env.jobs) == 0


# ----------------------------------------------------------------------------------------------- CLI

def test_cli_jobs_list_show_cancel_json(env, run_cli):
    a = env.job("cli-a")
    b = env.job("cli-b")
    code, out, _ = run_cli("jobs", "list", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [(j["id"], j["name"], j["state"]) for j in listed] == [(a, "cli-a", "queued"), (b, "cli-b", "queued")]
    assert run_cli("jobs", "cancel", b)[0] == 0
    code, out, _ = run_cli("jobs", "show", b, "--json")
    assert code == 0 and json.loads(out)["state"] == "cancelled" and "token" not in json.loads(out)
    code, _, err = run_cli("jobs", "cancel", b)
    assert code == 2 and err == f"error: job {b}: already cancelled; only queued or running jobs can be cancelled\n"
    code, _, err = run_cli("jobs", "show", "zzz")
    assert code == 2 and err.startswith("error: job: no job 'zzz'") and err.count("\n") == 1
    code, _, err = run_cli("jobs", "logs", "zzz")
    assert code == 2 and "no job 'zzz'" in err


def test_cli_sweep_dry_run_then_queue(env, run_cli, demo_structure):
    args = ["sweep", "--model", "demo", "--dataset", "synthetic:shapes", "--ratios", "1:1:1,1:4:1", "--seeds", "2",
            "--budget-rank", "8", "--max-steps", "10", "--gpus-per-job", "0", "--json"]
    code, out, _ = run_cli(*args, "--dry-run")
    plan = json.loads(out)
    assert code == 0 and plan["dry_run"] and len(plan["jobs"]) == 5 and rows_written(env.jobs) == 0
    assert [j["kind"] for j in plan["jobs"]] == ["train"] * 4 + ["reference"]
    code, out, _ = run_cli(*args, "--dry-run", "--no-reference")
    assert code == 0 and len(json.loads(out)["jobs"]) == 4
    code, out, _ = run_cli(*args, "--no-worker")
    queued = json.loads(out)
    assert code == 0 and queued["created"] and set(queued["states"].values()) == {"queued"}
    assert queued["sweep"] == plan["sweep"] and queued["worker"] is None
    code, out, _ = run_cli(*args, "--no-worker")
    assert code == 0 and json.loads(out)["created"] is False and len(env.store.list()) == 5
    code, _, err = run_cli(*args[:-1], "--ratios", "1:x:1", "--no-worker")
    assert code == 2 and err.startswith("error: ratio: the projector weight 'x' is not a number")
    code, _, err = run_cli("worker", "--gpus", "7")
    assert code == 2 and err.startswith("error: gpus: GPU 7 asked for")


# ---------------------------------------------------------------------------------------------- page

def test_jobs_page_plans_shows_progress_and_retries(env, demo_structure):
    from streamlit.testing.v1 import AppTest

    plan = plan_sweep(demo_spec(ratios="1:1:1,1:4:1", seeds=1, evaluate=False), structure=demo_structure)
    ok, bad = plan.jobs  # run the stand-in script instead of `train`; the second job fails once
    env.store.submit_sweep(plan.sweep_id, plan.spec.normalised(), [
        NewJob(id=ok.id, name=ok.name, steps=job_steps(ok.output_dir, steps=6), output_dir=ok.output_dir),
        NewJob(id=bad.id, name=bad.name, output_dir=bad.output_dir,
               steps=job_steps(bad.output_dir, "--fail-at", "2", "--first-run-only", steps=6)),
    ])
    assert env.worker("--once").wait(PATIENCE) == 0
    at = AppTest.from_file(str(ROOT / "app_pages" / "jobs.py"), default_timeout=PATIENCE)
    at.session_state["launch"] = {"model": "demo", "budget_kind": "rank", "budget_value": "8", "ratio": "2:4:1"}  # the calculator hand-off
    at.run()
    # the one error shown is the failed job's, selected first so the failure is in view
    assert not at.exception and [e.value for e in at.error] == [env.store.get(bad.id).message]
    assert at.selectbox(key="jobs_selected").value == bad.id
    assert at.multiselect(key="jobs_ratios").value == ["1:1:1", "2:4:1"] and at.text_input(key="jobs_model").value == "demo"
    planned = at.dataframe[0].value
    # the demo defaults: 2 seeds, and the base model's reference row
    assert list(planned["ratio"]) == ["1:1:1"] * 2 + ["2:4:1"] * 2 + ["base model"]
    assert (planned["trainable params"][:-1].str.replace(",", "").astype(int) > 0).all()
    assert planned["seed"].iloc[-1] == "–" and "None" not in planned.to_string()  # the reference row has no seed
    table = at.dataframe[1].value.set_index("job")
    assert table.loc[ok.id, "state"] == "succeeded" and table.loc[ok.id, "progress"] == 1.0
    assert table.loc[bad.id, "state"] == "failed" and table.loc[bad.id, "reason"] == "exit code 1: simulated failure"
    at.selectbox(key="jobs_selected").set_value(bad.id).run()
    assert "error: simulated failure" in at.code[0].value
    next(b for b in at.button if b.label == "Retry").click().run(timeout=PATIENCE)
    assert not at.exception and env.store.get(bad.id).retries == 1
    assert at.toast[0].value.startswith(f"Job {bad.id} queued again (retry 1)")  # the click says what it did
    workers = wait_for(live_workers, what="the worker the page starts")  # ensure_worker: a detached worker
    env.pids += [w["pid"] for w in workers]
    wait_for(lambda: state_of(env, bad.id) is JobState.SUCCEEDED, what="the retried job")
    assert [r["start_step"] for r in env.runs_at(bad.output_dir)] == [0, 2]
    next(b for b in at.run().button if b.label == "Open in Compare").click().run()  # the sweep has ended
    assert not at.exception and at.session_state["compare_focus"] == {"model": "demo"}
