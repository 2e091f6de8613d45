"""The Slurm executor: the job system's jobs submitted to a Slurm cluster with plain sbatch / sacct / scancel.

    res = SlurmResources(partition="gpu", gpus_per_node=1, cpus_per_gpu=8, mem="64G", time="12:00:00")
    check_resources(res)            # before anything is queued: Slurm reachable, partition, GPUs, time (InputError)
    python -m toolkit sweep ... --executor slurm --partition gpu --gpus-per-node 1 --time 12:00:00
    python -m toolkit worker        # the usual worker submits the Slurm jobs and follows them

The SQLite store stays the source of truth: the worker claims a Slurm job, `launch` writes its steps to
`<jobs>/<id>/slurm/job.json` (with each step's launch: the multi-GPU train step runs one
`toolkit.training.distributed` launcher per node) and sbatches a one-line script that runs
`python -m toolkit.queue.slurm.runner run job.json` on the first node (`--output` = the job's usual log,
appended, so `jobs logs` and the app read it as for local jobs). That runner (toolkit.queue.slurm.runner)
starts each remaining step under `srun` (so Slurm's signals reach it), marks each finished step
(`step-K.done`) and the whole job (`done`), and records its exact exit code in `progress.json`, which the
worker reads with the engine's state. A requeued run (Slurm preemption, node failure, `scontrol requeue`) skips the marked steps:
a requeue racing a job that has just finished runs nothing, and training resumes from its last complete
checkpoint (every job's train step has `--resume`; sbatch's `--signal=USR2@90` makes training checkpoint
before the time limit, and `--checkpoint-every` saves regardless).

Polling is batched: `refresh` runs ONE `squeue` for all of a worker's Slurm jobs per tick (at most every
`CMBA_SLURM_POLL_S` seconds, default 5): the controller's live view, since accounting lags it by seconds (a
running job still PENDING in sacct; a cancelled job recorded as ended while it still checkpoints). ONE
`sacct` for the jobs that ended or that the controller no longer holds adds exit codes and final states. A
job neither knows for `CMBA_SLURM_LOST_S` (default 120 s) is lost: re-queued and resubmitted up to the
attempt cap. Engine states map onto ours in `interpret`.

Slurm's commands and the resource requests are toolkit.queue.slurm.cluster's.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

from toolkit import runs
from toolkit.errors import InputError
from toolkit.outcomes import ExitCode, Reason
from toolkit.paths import PROJECT_ROOT
from toolkit.queue.executor import Executor, Run, RunStatus
from toolkit.queue.slurm.cluster import (
    SlurmResources,
    _last_error,
    parse_time,
    slurm,
    slurm_problem,
)
from toolkit.queue.store import Job

SIGNAL_BEFORE_END_S = 90
"""sbatch --signal=USR2@90: training checkpoints and stops this long before the time limit (a tenth of a
shorter limit), then resumes in a new submission"""


# --------------------------------------------------------------------------------------- states

QUEUED_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "CONFIGURING", "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING",
                  "STAGE_OUT", "PREEMPTED_RUNNING"}
RESUME_STATES = {"PREEMPTED": Reason.PREEMPTED, "NODE_FAIL": Reason.NODE_FAILURE, "BOOT_FAIL": Reason.NODE_FAILURE,
                 "REVOKED": Reason.REVOKED}


def _exit_code(text: str | None) -> int | None:
    """sacct's ExitCode 'N:S' -> N, or -S when a signal ended it."""
    if not text or ":" not in text:
        return None
    code, sig = (int(x) if x.isdigit() else 0 for x in text.split(":", 1))
    return -sig if sig and not code else code


def interpret(state: str, exit_code: str | None, *, runner_code: int | None = None, has_checkpoint: bool = False,
              step_index: int = 0) -> RunStatus:
    """One job's sacct state (and the runner's own exit code, when it recorded one) as a RunStatus."""
    word = (state or "").split()[0].upper().rstrip("+") if state else ""
    code = runner_code if runner_code is not None else _exit_code(exit_code)
    if word in QUEUED_STATES:
        return RunStatus(done=False, step_index=step_index, queued=True,
                         reason=Reason.ENGINE_REQUEUED if word != "PENDING" else None)
    if word in RUNNING_STATES or not word:
        return RunStatus(done=False, step_index=step_index)
    if word == "COMPLETED":
        return RunStatus(done=True, step_index=step_index, returncode=ExitCode.SUCCESS if code is None else code)
    if word == "OUT_OF_MEMORY":
        return RunStatus(done=True, step_index=step_index, returncode=code, reason=Reason.OUT_OF_MEMORY)
    if word == "CANCELLED":
        return RunStatus(done=True, step_index=step_index, returncode=code, reason=Reason.ENGINE_CANCELLED,
                         cancelled=True)
    if word in RESUME_STATES:
        return RunStatus(done=True, step_index=step_index, returncode=code, reason=RESUME_STATES[word], resume=True)
    if word == "TIMEOUT":
        return RunStatus(done=True, step_index=step_index, returncode=code, resume=has_checkpoint,
                         reason=Reason.TIME_LIMIT + ("" if has_checkpoint else " (no checkpoint to resume from)"))
    if word == "DEADLINE":
        return RunStatus(done=True, step_index=step_index, returncode=code, reason=Reason.DEADLINE)
    if code == ExitCode.INTERRUPTED:  # FAILED: a step checkpointed on a signal (preemption notice, time limit near)
        return RunStatus(done=True, step_index=step_index, returncode=code, resume=True,
                         reason=Reason.ENGINE_INTERRUPTED)
    failed = code in (None, ExitCode.SUCCESS)  # FAILED, yet no exit status says so
    return RunStatus(done=True, step_index=step_index, returncode=ExitCode.FAILURE if failed else code)


def _final(state: str) -> bool:
    word = (state or "").split()[0].upper().rstrip("+") if state else ""
    return bool(word) and word not in QUEUED_STATES and word not in RUNNING_STATES


def lost_status(step_index: int) -> RunStatus:
    return RunStatus(done=True, step_index=step_index, reason=Reason.ENGINE_LOST, resume=True)


# ------------------------------------------------------------------------------------------ executor

def step_launch(step: list[str], *, nodes: int) -> dict:
    """How the runner starts `step` (job.json's `launch`): the distributed launcher spans the job's nodes
    (one launcher per node), any other step runs on the first node."""
    from toolkit.training.distributed import is_launch

    if is_launch(step):
        return {"launcher": "toolkit.training.distributed", "nodes": nodes}
    return {"launcher": None, "nodes": 1}


def job_folder(job: Job) -> Path:
    return Path(job.log_path).parent / "slurm"


def _read_json(path: Path) -> dict:
    """A job-folder file the runner writes (progress.json); {} until it exists."""
    try:
        return runs.read_json(path)
    except InputError:
        return {}


_write_json = runs.write_json


class SlurmExecutor(Executor):
    """Submits (sbatch), polls (one squeue per tick, sacct for ended jobs), cancels (scancel) Slurm jobs; their
    logs are the jobs' usual logs."""

    name = "slurm"
    engine = True

    @classmethod
    def problem(cls) -> str | None:
        return slurm_problem()

    def __init__(self, *, poll_s: float | None = None, lost_after_s: float | None = None, python: str | None = None,
                 cwd: str | Path = PROJECT_ROOT):
        self.poll_s = poll_s if poll_s is not None else float(os.environ.get("CMBA_SLURM_POLL_S") or 5.0)
        self.lost_after_s = (lost_after_s if lost_after_s is not None
                             else float(os.environ.get("CMBA_SLURM_LOST_S") or 120.0))
        self.python = python or os.environ.get("CMBA_SLURM_PYTHON") or sys.executable
        self.cwd = str(cwd)
        self._last_query = -1e9
        self._states: dict[str, tuple[str, str | None]] = {}
        self._progress: dict[str, dict] = {}
        self.queries = 0
        """status queries run so far (sacct + squeue), for tests and logs"""

    # -- submit
    def launch(self, job: Job, *, env: dict[str, str]) -> Run:
        res = SlurmResources.from_dict(job.resources)
        folder = job_folder(job)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("step-*.done"):  # steps from `step_index` on run again in this attempt
            if int(stale.name.split("-")[1].split(".")[0]) >= job.step_index:
                stale.unlink(missing_ok=True)
        spec = {"job": job.id, "name": job.name, "attempt": job.attempts, "steps": [list(s) for s in job.steps],
                "start_step": job.step_index, "python": self.python, "nodes": res.nodes,
                "gpus_per_node": res.gpus_per_node or 0, "env": env, "cwd": self.cwd,
                "launch": [step_launch(step, nodes=res.nodes) for step in job.steps]}
        _write_json(folder / "job.json", spec)
        script = folder / "job.sbatch"
        script.write_text(f"#!/bin/bash\n# job {job.id} ({job.name}); written by toolkit.queue.slurm.executor\n"
                          f"exec {shlex.quote(self.python)} -m toolkit.queue.slurm.runner run {shlex.quote(str(folder / 'job.json'))}\n")
        Path(job.log_path).parent.mkdir(parents=True, exist_ok=True)
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": os.pathsep.join(filter(None, [self.cwd, os.environ.get("PYTHONPATH")]))}
        warn_s = SIGNAL_BEFORE_END_S if not res.time else int(min(SIGNAL_BEFORE_END_S, parse_time(res.time) * 6))
        args = ["sbatch", "--parsable", f"--job-name=cmba-{job.id}", f"--output={job.log_path}", "--open-mode=append",
                f"--chdir={self.cwd}", "--requeue", "--export=ALL", *([f"--signal=USR2@{warn_s}"] if warn_s >= 5 else []),
                *res.sbatch_args(), str(script)]
        proc = slurm(*args, env=full_env)
        if proc.returncode != 0:
            raise InputError(f"slurm: sbatch refused job {job.id}: {_last_error(proc)}")
        engine_id = proc.stdout.strip().split(";")[0]
        with open(job.log_path, "a") as log:
            log.write(f"[cmba-worker {time.strftime('%Y-%m-%d %H:%M:%S')}] job {job.id} attempt {job.attempts}: "
                      f"submitted to Slurm as job {engine_id} ({' '.join(res.sbatch_args())})\n")
        return Run(job=job, step_index=job.step_index,
                   handle={"engine_id": engine_id, "seen": time.monotonic(), "folder": str(folder)})

    def attach(self, job: Job) -> Run:
        return Run(job=job, step_index=job.step_index,
                   handle={"engine_id": job.engine_id, "seen": time.monotonic(), "folder": str(job_folder(job))})

    # -- watch
    def refresh(self, runs: list[Run]) -> None:
        now = time.monotonic()
        if not runs or now - self._last_query < self.poll_s:
            return
        self._last_query = now
        ids = [r.handle["engine_id"] for r in runs]
        # The controller's live view first: accounting lags it by seconds (a running job still PENDING in
        # sacct) and records a cancelled job's end while its processes still checkpoint (COMPLETING here).
        states = self._squeue(ids)
        if states is None:  # the controller does not answer: no news, nobody lost
            return
        # Accounting for the jobs the controller no longer holds, and for the exit codes of ended ones.
        ended = [i for i in ids if i not in states or _final(states[i][0])]
        if ended:
            for job_id, known in self._sacct(ended).items():
                if job_id not in states or _final(known[0]):
                    states[job_id] = known
        self._states = states
        for run in runs:  # after the states: a runner that has ended wrote its exit code before it ended
            self._progress[run.handle["engine_id"]] = _read_json(Path(run.handle["folder"]) / "progress.json")

    def _sacct(self, ids: list[str]) -> dict[str, tuple[str, str | None]]:
        self.queries += 1
        try:
            proc = slurm("sacct", "-X", "-n", "-P", "-j", ",".join(ids), "-o", "JobIDRaw,State,ExitCode")
        except OSError:
            return {}
        out = {}
        for line in proc.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 3 and parts[0] in ids:
                out[parts[0]] = (parts[1], parts[2])
        return out

    def _squeue(self, ids: list[str]) -> dict[str, tuple[str, str | None]] | None:
        """{job id: (state, None)} of the jobs the controller holds (-t all: ended ones too, for a few
        minutes); None when it does not answer."""
        self.queries += 1
        try:
            proc = slurm("squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i|%T")
        except OSError:
            return None
        if proc.returncode != 0 and "invalid job id" not in (proc.stderr or "").lower():
            return None
        out = {}
        for line in proc.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 2 and parts[0] in ids:
                out[parts[0]] = (parts[1], None)
        return out

    def poll(self, run: Run) -> RunStatus:
        engine_id = run.handle["engine_id"]
        progress = self._progress.get(engine_id) or {}
        if progress.get("engine_id") != engine_id:
            progress = {}  # written by an earlier attempt
        step_changed = False
        if isinstance(progress.get("step_index"), int) and progress["step_index"] != run.step_index:
            run.step_index, step_changed = progress["step_index"], True
        known = self._states.get(engine_id)
        if known is None:
            if time.monotonic() - run.handle["seen"] > self.lost_after_s:
                return lost_status(run.step_index)
            return RunStatus(done=False, step_index=run.step_index, step_changed=step_changed,
                             queued=run.handle.get("queued", False))
        run.handle["seen"] = time.monotonic()
        state, exit_code = known
        status = interpret(state, exit_code, runner_code=progress.get("returncode"), step_index=run.step_index,
                           has_checkpoint=_has_checkpoint(run.job))
        if status.queued and run.handle.get("queued") is False:  # it ran, and Slurm put it back (requeue)
            status = RunStatus(**{**status.__dict__, "reason": Reason.ENGINE_REQUEUED})
        if status.done or step_changed or progress.get("gpus") is not None:
            status = RunStatus(**{**status.__dict__, "step_changed": step_changed,
                                  "gpu_ids": progress.get("gpus") or None})
        return status

    # -- stop
    def cancel(self, run: Run, *, force: bool = False) -> None:
        run.cancelling = True
        engine_id = run.handle["engine_id"]
        try:
            if force:  # a running job: KILL to every step and the batch script; a pending one: just cancel
                slurm("scancel", "--full", "--signal=KILL", engine_id, timeout=30)
            slurm("scancel", engine_id, timeout=30)
        except OSError:
            pass

    def cleanup_lost(self, job: Job, *, grace_s: float) -> None:  # noqa: ARG002 - interface
        if job.engine_id:
            try:
                slurm("scancel", job.engine_id, timeout=30)
            except OSError:
                pass


def _has_checkpoint(job: Job) -> bool:
    """Whether the job's run has saved work to resume from: a complete checkpoint (a half-written one does not
    count), or a finished run (the steps after training are left)."""
    return runs.latest_checkpoint(job.output_dir) is not None or runs.is_complete(job.output_dir)
