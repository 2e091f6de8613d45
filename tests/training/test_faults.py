"""Fault injection: what breaks a run from outside, and the guarantee that nothing is lost or leaked.

- damaged checkpoints (9 kinds): resume falls back to the newest one that verifies, or says why in one line;
  end to end, a run resumed past a damaged checkpoint ends with the uninterrupted run's weights;
- non-finite training: stops at the step where it happens, no cmba.json;
- SIGKILL of a job's step (the OOM killer's signal): re-queued, resumed from its checkpoint, up to the cap;
- a held write lock on jobs.db: the CLI says so in one line, the worker waits and carries on;
- cancel of a step whose child left its process group (setsid): nothing survives;
- an adapter folder with symlinks or truncated weights: never published.

Jobs run the stand-in script of tests/helpers/jobscript.py under a real worker subprocess, as in test_jobs.py.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.helpers.faults import TRAIN, one_line_error, scramble, truncate
from tests.helpers.jobscript import PATIENCE, job_steps, wait_for
from toolkit.cli import main
from toolkit.errors import InputError, TrainingDiverged
from toolkit.queue.executor import oom_kills, process_alive
from toolkit.queue.states import JobState
from toolkit.queue.store import JobStore, NewJob
from toolkit.training import checkpoint

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------ checkpoints

def _model_and_optimizer():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return model, opt


def _save_two(run_dir: Path):
    model, opt = _model_and_optimizer()
    for step in (2, 4):
        checkpoint.save(run_dir, step, adapter=dict(model.state_dict()), optimizer=opt,
                        state={"fingerprint": "fp", "train_time_s": float(step)})
    return model, opt


def _zeroed(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    save_file({k: v * 0 for k, v in load_file(str(path)).items()}, str(path))


def _nan(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    save_file({k: v * float("nan") for k, v in load_file(str(path)).items()}, str(path))


def _state(**change):
    def damage(folder: Path) -> None:
        state = json.loads((folder / "state.json").read_text())
        state.update(change)
        (folder / "state.json").write_text(json.dumps({k: v for k, v in state.items() if v is not None}))
    return damage


DAMAGE = {
    "truncated-adapter": lambda f: truncate(f / "adapter.safetensors"),
    "random-adapter": lambda f: scramble(f / "adapter.safetensors"),
    "deleted-adapter": lambda f: (f / "adapter.safetensors").unlink(),
    "truncated-optimizer-json": lambda f: truncate(f / "optimizer.json"),
    "random-rng-json": lambda f: scramble(f / "rng.json"),
    "deleted-optimizer-tensors": lambda f: (f / "optimizer.safetensors").unlink(),
    "state-without-step": _state(step=None),
    "state-claims-step-999": _state(step=999),
    "zeroed-weights": lambda f: _zeroed(f / "adapter.safetensors"),
    "nan-weights": lambda f: _nan(f / "adapter.safetensors"),
}


@pytest.mark.parametrize("damage", list(DAMAGE.values()), ids=list(DAMAGE))
def test_resume_falls_back_past_a_damaged_checkpoint(tmp_path, damage):
    _save_two(tmp_path)
    damage(tmp_path / "checkpoints" / "step-0000004")
    _, opt = _model_and_optimizer()
    logged = []
    found = checkpoint.restore(tmp_path, opt, fingerprint="fp", max_steps=12, log=logged.append)
    assert found is not None
    path, adapter, state = found
    assert path.name == "step-0000002" and state["step"] == 2 and set(adapter) == {"weight", "bias"}
    assert len(logged) == 1 and "step-0000004 is damaged" in logged[0]


def test_nan_weights_in_a_checkpoint_without_digests_are_refused(tmp_path):
    _save_two(tmp_path)
    for step in ("step-0000002", "step-0000004"):  # as written before digests existed
        _state(files=None)(tmp_path / "checkpoints" / step)
    _nan(tmp_path / "checkpoints" / "step-0000004" / "adapter.safetensors")
    _, opt = _model_and_optimizer()
    path, _, _ = checkpoint.restore(tmp_path, opt, fingerprint="fp", max_steps=12, log=lambda m: None)
    assert path.name == "step-0000002"


def test_no_valid_checkpoint_is_one_line(tmp_path):
    _save_two(tmp_path)
    for step in ("step-0000002", "step-0000004"):
        truncate(tmp_path / "checkpoints" / step / "adapter.safetensors")
    _, opt = _model_and_optimizer()
    with pytest.raises(InputError, match=r"^resume: no valid checkpoint in .*step-0000004: .*step-0000002: .*--overwrite$"):
        checkpoint.restore(tmp_path, opt, fingerprint="fp", max_steps=12, log=lambda m: None)


def test_other_settings_are_not_mistaken_for_damage(tmp_path):
    _save_two(tmp_path)
    _, opt = _model_and_optimizer()
    with pytest.raises(InputError, match="made with other settings"):
        checkpoint.restore(tmp_path, opt, fingerprint="other", max_steps=12, log=lambda m: None)


def _lora_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.slow
def test_resumed_past_damage_ends_with_the_uninterrupted_weights(tmp_path, capsys):
    """Train 6 steps straight; train again, stopped at step 4, damage checkpoint 4, resume: same weights."""
    from toolkit.outcomes import Interrupted
    from toolkit.training.engine import train
    from toolkit.training.settings import TrainSettings

    flags = dict(model="demo", dataset="synthetic:shapes?n=40", ratio="1:1:1", budget_rank=2, batch_size=2,
                 max_steps=6, checkpoint_every=2, progress=False)
    straight = tmp_path / "straight"
    train(TrainSettings(**flags, output=str(straight)), log=lambda m: None)
    broken = tmp_path / "broken"
    with pytest.raises(Interrupted):
        train(TrainSettings(**flags, output=str(broken)), log=lambda m: None, stop_after=4)
    truncate(broken / "checkpoints" / "step-0000004" / "adapter.safetensors")
    assert main(["train", *TRAIN, "--dataset", "synthetic:shapes?n=40", "--max-steps", "6", "--checkpoint-every", "2",
                 "--output", str(broken), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "checkpoint step-0000004 is damaged" in err and "resuming" in err and "from step 2/6" in err
    a, b = _lora_weights(straight), _lora_weights(broken)
    assert set(a) == set(b) and max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6
    assert [m["step"] for m in map(json.loads, (broken / "metrics.jsonl").read_text().splitlines())] == [1, 2, 3, 4, 5, 6]


# ------------------------------------------------------------------------------------------ non-finite training

def test_non_finite_weights_stop_training_without_an_adapter(tmp_path):
    from toolkit.training.engine import resume, setup
    from toolkit.training.loop import fit
    from toolkit.training.settings import TrainSettings

    settings = TrainSettings(model="demo", dataset="synthetic:shapes?n=40", ratio="1:1:1", budget_rank=2,
                             batch_size=2, max_steps=3, progress=False, output=str(tmp_path / "nan"))
    from toolkit.training import distributed

    run = setup(settings, ctx=distributed.context(), log=lambda m: None)
    progress = resume(run, log=lambda m: None)
    next(p for g in run.groups for p in g["params"]).data.fill_(float("inf"))  # what a diverged step leaves
    with pytest.raises(TrainingDiverged, match=r"^training: the (loss is (nan|inf)|adapter weights are NaN or infinite) "
                                               r"(at|after) step 1;"):
        fit(run, progress, log=lambda m: None)
    assert not (tmp_path / "nan" / "cmba.json").exists() and not (tmp_path / "nan" / "checkpoints").exists()


# ------------------------------------------------------------------------------------------ jobs

class Jobs:
    """A jobs folder, a worker subprocess, and cleanup of every process a test starts."""

    def __init__(self, tmp: Path, **env):
        self.tmp, self.folder = tmp, tmp / "jobs"
        self.env = {**os.environ, "CMBA_JOBS_DIR": str(self.folder), "CMBA_ADAPTERS_DIR": str(tmp / "adapters"), **env}
        self.procs: list[subprocess.Popen] = []
        self.store = JobStore(self.folder)

    def worker(self) -> subprocess.Popen:
        log = open(self.tmp / "worker.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([sys.executable, "-m", "toolkit", "worker", "--poll", "0.1", "--grace", "2"],
                                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def submit(self, name: str, steps: list[list[str]], **kw) -> str:
        return self.store.submit(NewJob(name=name, steps=steps, output_dir=str(self.tmp / name), **kw)).id

    def runs(self, name: str) -> list[dict]:
        return [json.loads(x) for x in (self.tmp / name / "runs.jsonl").read_text().splitlines()]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def jobs(tmp_path):
    j = Jobs(tmp_path, CMBA_STORE_BUSY_S="0.3")
    yield j
    j.close()


def test_sigkill_of_a_step_is_requeued_and_resumes(jobs):
    out = jobs.tmp / "k"
    job_id = jobs.submit("k", job_steps(out, steps=60, step_time=0.05))
    jobs.worker()
    wait_for(lambda: (out / "checkpoints" / "step-4").exists(), what="the step to checkpoint")
    pid = jobs.store.get(job_id).pid
    os.kill(pid, signal.SIGKILL)  # what the kernel's OOM killer does
    wait_for(lambda: jobs.store.get(job_id).state is JobState.SUCCEEDED, what="the re-queued job to finish")
    runs = jobs.runs("k")
    assert len(runs) == 2 and runs[1]["start_step"] >= 4 and jobs.store.get(job_id).attempts == 2
    log = (jobs.tmp / "worker.log").read_text()
    assert f"job {job_id}: queued (killed (SIGKILL))" in log or f"job {job_id}: queued (out_of_memory" in log
    assert oom_kills() is None or oom_kills() >= 0


def test_sigkill_every_attempt_fails_at_the_cap(jobs):
    out = jobs.tmp / "k3"
    job_id = jobs.submit("k3", job_steps(out, steps=100000, step_time=0.05), max_attempts=2)
    jobs.worker()
    for attempt in (1, 2):
        pid = wait_for(lambda a=attempt: (j := jobs.store.get(job_id)).attempts == a and j.pid, what=f"attempt {attempt}")
        wait_for(lambda p=pid: Path(f"/proc/{p}").exists(), what="the step process")
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: jobs.store.get(job_id).state is JobState.FAILED, what="the cap")
    job = jobs.store.get(job_id)
    assert job.reason in ("killed (SIGKILL)", "out_of_memory (killed by the kernel)")
    assert "gave up after 2 of 2 attempts" in job.message


def _hold_write_lock(db_path: Path, release: threading.Event, held: threading.Event) -> None:
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    held.set()
    release.wait(PATIENCE)
    db.execute("ROLLBACK")
    db.close()


@pytest.mark.slow  # python -m toolkit in subprocesses (torch imported in each): 11-23 s on 2 cores
def test_held_write_lock_is_one_line_for_the_cli_and_waited_out_by_the_worker(jobs):
    out = jobs.tmp / "w"
    job_id = jobs.submit("w", job_steps(out, steps=30, step_time=0.05))
    worker = jobs.worker()
    wait_for(lambda: jobs.store.get(job_id).state is JobState.RUNNING, what="the job to start")
    release, held = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(jobs.folder / "jobs.db", release, held))
    holder.start()
    try:
        held.wait(PATIENCE)
        proc = subprocess.run([sys.executable, "-m", "toolkit", "sweep", "--model", "demo", "--dataset",
                               "synthetic:shapes", "--ratios", "1:1:1", "--budget-rank", "8", "--no-worker"],
                              cwd=ROOT, env=jobs.env, capture_output=True, text=True, timeout=PATIENCE)
        one_line_error(proc.returncode, proc.stderr, "jobs store: busy")
        wait_for(lambda: "jobs store busy" in (jobs.tmp / "worker.log").read_text(), what="the worker to back off")
        assert worker.poll() is None
    finally:
        release.set()
        holder.join()
    wait_for(lambda: jobs.store.get(job_id).state is JobState.SUCCEEDED, what="the job after the lock")
    assert worker.poll() is None and len(jobs.runs("w")) == 1


def test_revive_worker_when_queued_jobs_have_none(jobs, monkeypatch):
    from toolkit.queue.lifecycle import live_workers, revive_worker

    monkeypatch.setenv("CMBA_JOBS_DIR", str(jobs.folder))
    assert revive_worker(jobs.store) is None  # nothing queued: nothing to start
    job_id = jobs.submit("r", job_steps(jobs.tmp / "r", steps=3, step_time=0.01))
    started = revive_worker(jobs.store)
    assert started["started"]
    try:
        wait_for(lambda: jobs.store.get(job_id).state is JobState.SUCCEEDED, what="the revived worker's job")
        wait_for(lambda: live_workers(jobs.store), what="the worker's heartbeat")
        assert revive_worker(jobs.store) is None  # a live worker: none started
    finally:
        os.killpg(started["pid"], signal.SIGKILL)  # ensure_worker starts it in its own session


ESCAPEE = """
import os, subprocess, sys, time
out = sys.argv[1]
child = subprocess.Popen(["setsid", sys.executable, "-c", "import signal, time\\n"
                          "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\ntime.sleep(600)"])
open(out + "/escapee.pid.tmp", "w").write(str(child.pid)); os.replace(out + "/escapee.pid.tmp", out + "/escapee.pid")
while True:
    time.sleep(0.05)
"""


def test_cancel_kills_a_child_that_left_the_process_group(jobs):
    out = jobs.tmp / "esc"
    out.mkdir()
    job_id = jobs.submit("esc", [["{python}", "-c", ESCAPEE, str(out)]])
    jobs.worker()
    pid_file = wait_for(lambda: (out / "escapee.pid").exists() and out / "escapee.pid", what="the escapee")
    escapee = int(pid_file.read_text())
    wait_for(lambda: os.getpgid(escapee) == escapee, what="setsid")  # its own session: not the step's group
    jobs.store.request_cancel(job_id)
    wait_for(lambda: jobs.store.get(job_id).state is JobState.CANCELLED, what="the cancel")
    wait_for(lambda: not process_alive(escapee, None), what="the escapee to be killed")


# ------------------------------------------------------------------------------------------ publishing

@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    from tests.helpers.faults import train_adapter

    root = tmp_path_factory.mktemp("pub")
    old = os.environ.get("CMBA_ADAPTERS_DIR")
    os.environ["CMBA_ADAPTERS_DIR"] = str(root)
    try:
        return train_adapter(root / "a")
    finally:
        os.environ.pop("CMBA_ADAPTERS_DIR") if old is None else os.environ.update(CMBA_ADAPTERS_DIR=old)


@pytest.mark.parametrize("where", ["metrics.jsonl", "predictions", "eval-folder", "extra-file"])
def test_publish_refuses_symlinks(adapter, tmp_path, where):
    import shutil

    from toolkit.hub.publish import collect_files

    folder = Path(shutil.copytree(adapter, tmp_path / "a"))
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the Hub")
    if where == "metrics.jsonl":
        (folder / "metrics.jsonl").unlink()
        (folder / "metrics.jsonl").symlink_to(secret)
    elif where == "predictions":
        pred = next((folder / "eval").glob("*/predictions.jsonl"))
        pred.unlink()
        pred.symlink_to(secret)
    elif where == "eval-folder":
        tag = next((folder / "eval").iterdir())
        moved = Path(shutil.move(str(tag), tmp_path / "elsewhere"))
        tag.symlink_to(moved, target_is_directory=True)
    else:
        (folder / "notes.txt").symlink_to(secret)
    with pytest.raises(InputError, match="symbolic link"):
        collect_files(folder)


def test_publish_refuses_truncated_weights_whose_header_parses(adapter, tmp_path):
    import shutil

    from toolkit import tensorfile
    from toolkit.hub.publish import collect_files

    folder = Path(shutil.copytree(adapter, tmp_path / "a"))
    weights = folder / "adapter_model.safetensors"
    header = 8 + int.from_bytes(weights.read_bytes()[:8], "little")
    truncate(weights, keep=(header + 16) / weights.stat().st_size)  # the header is intact, the data is not
    assert json.loads(weights.read_bytes()[8:header])
    with pytest.raises(InputError, match="lies outside the file"):
        collect_files(folder)
    with pytest.raises(InputError):
        tensorfile.check(weights)
    assert tensorfile.check(adapter / "adapter_model.safetensors")  # the intact one passes


@pytest.mark.parametrize("code, kw, state, reason", [
    (-signal.SIGKILL, {}, JobState.QUEUED, "killed (SIGKILL)"),
    (128 + signal.SIGKILL, {}, JobState.QUEUED, "killed (SIGKILL)"),
    (-signal.SIGKILL, {"engine_reason": "out_of_memory (killed by the kernel)"}, JobState.QUEUED,
     "out_of_memory (killed by the kernel)"),
    (-signal.SIGKILL, {"cancelling": True}, JobState.CANCELLED, "cancelled by user"),  # our own SIGKILL
    (-signal.SIGKILL, {"shutdown": True}, JobState.QUEUED, "worker stopped"),
    (3, {}, JobState.FAILED, "out_of_memory"),  # the step itself said so: the same settings would fail again
])
def test_how_a_sigkill_is_read(code, kw, state, reason):
    from toolkit.outcomes import decide

    outcome = decide(code, [], **kw)
    assert (outcome.state, outcome.reason) == (state, reason)
