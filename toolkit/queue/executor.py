"""Where a claimed job's steps run: the `Executor` interface and the local process executor (the default).

    ex = LocalExecutor()
    run = ex.launch(job, env={"CUDA_VISIBLE_DEVICES": "0"})   # starts job.steps[job.step_index]
    status = ex.poll(run)            # non-blocking; starts the next step itself when one ends with 0
    ex.cancel(run)                   # SIGTERM to the process group (force=True: SIGKILL)

The worker (toolkit/queue/worker.py) owns the loop and the store; an executor only starts, watches and stops
processes, so a cluster backend (toolkit/queue/slurm/executor.py: sbatch the remaining steps as one script,
poll with one squeue per tick, cancel with scancel, logs in the same file) implements these methods and
nothing in the UI changes. The worker knows executors by name only: `EXECUTORS` maps a job's `executor` to
its class (imported on first use), `Executor.problem()` says why one cannot run on this machine. Engine executors also implement `refresh` (one batched status query for all their runs, called
once per worker tick before `poll`) and `attach` (rebuild a run from the engine's job id, so a new worker
adopts the jobs of a lost one instead of starting them again).

Each step of the local executor runs as `argv` in a new session (its own process group), with stdout and
stderr appended to the job's log, and a `CMBA_RUN_TAG` in its environment that its descendants inherit. When a
step's leader exits, the rest of its process group is killed, and so is every process carrying its tag: one
that left the group (`setsid`, a daemon) is still found, so a job never leaves children behind. A step killed
by SIGKILL that the toolkit did not send is reported with reason `out_of_memory (killed by the kernel)` when
the cgroup's memory.events counted an OOM kill meanwhile (toolkit.outcomes re-queues it either way). `PYTHON` in a step stands for this interpreter, so the store holds
`["{python}", "-m", "toolkit", "train", ...]` rather than a venv path.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.outcomes import Reason
from toolkit.paths import PROJECT_ROOT
from toolkit.queue.store import Job

PYTHON = "{python}"
"""placeholder for the worker's Python interpreter in a job step"""
TAG = "CMBA_RUN_TAG"
"""environment variable that marks every process of one run of a job (inherited by its descendants)"""


# ------------------------------------------------------------------------------- process identity

def process_start_time(pid: int | None) -> int | None:
    """Start time of `pid` in clock ticks since boot (/proc/<pid>/stat field 22); None if gone or a zombie."""
    if not pid:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def process_alive(pid: int | None, start_time: int | None) -> bool:
    """The process `pid` exists and is the one that started at `start_time` (not a reused pid)."""
    now = process_start_time(pid)
    return now is not None and (start_time is None or now == start_time)


def process_group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal a whole process group; False if it no longer exists."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def tagged_processes(key: str, value: str) -> list[int]:
    """Live processes whose environment holds `key=value` (a step's descendants, wherever they moved)."""
    needle = f"{key}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0") and process_start_time(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def kill_tagged(key: str, value: str, sig: int = signal.SIGKILL) -> int:
    """Signal every process tagged `key=value`; returns how many were signalled."""
    n = 0
    for pid in tagged_processes(key, value):
        try:
            os.kill(pid, sig)
            n += 1
        except (ProcessLookupError, PermissionError):
            pass
    return n


def oom_kills() -> int | None:
    """OOM kills counted in this process's cgroup (v2 memory.events, else v1 memory.oom_control); None when
    unreadable. Steps run in the worker's cgroup, so a rise while a step ran means the kernel killed it."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    candidates = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            candidates.append(Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.events")
        elif "memory" in controllers.split(","):
            candidates.append(Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.oom_control")
    for file in candidates:
        try:
            for row in file.read_text().splitlines():
                key, _, value = row.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def stop_group(pgid: int, leader_start: int | None, *, grace_s: float) -> None:
    """SIGTERM a process group, wait up to `grace_s` for it to go, then SIGKILL what is left."""
    if leader_start is not None and not process_alive(pgid, leader_start):
        leader_start = None  # the leader is gone: only stragglers of its group may remain
    if not kill_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and process_group_members(pgid):
        time.sleep(0.05)
    kill_group(pgid, signal.SIGKILL)


try:  # Linux: a job step gets SIGTERM when its worker dies (it checkpoints and exits; the job is re-queued)
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent() -> None:
    if _prctl is not None:
        _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def tail_lines(path: str | Path | None, n: int = 50) -> list[str]:
    """The last `n` lines of a text file ([] if it does not exist)."""
    if not path or n <= 0:
        return []
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            chunk = min(size, max(4096, 256 * n))
            fh.seek(size - chunk)
            data = fh.read()
    except OSError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    if chunk < size:
        lines = lines[1:]  # the first line read may be cut
    return [line.rstrip("\r") for line in deque(lines, maxlen=n)]


# ------------------------------------------------------------------------------------ interface

@dataclass
class Run:
    """A job being run by an executor (executor-specific details live in `handle`)."""

    job: Job
    step_index: int
    pid: int | None = None
    pid_start: int | None = None
    cancelling: bool = False
    handle: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RunStatus:
    done: bool
    """every step ended (or one failed, or the run was cancelled)"""
    step_index: int
    returncode: int | None = None
    """of the last step that ran; negative = killed by that signal"""
    step_changed: bool = False
    """a new step started since the last poll (record its pid)"""
    queued: bool = False
    """not done and not started yet: waiting in the engine's queue (or put back there by the engine)"""
    reason: str | None = None
    """the engine's account of how the run ended, when it says more than the exit code ('out_of_memory',
    'preempted', 'node failure', 'time limit', 'lost', 'cancelled in Slurm')"""
    resume: bool = False
    """ended by the engine, not by the job: run it again (it resumes from its last checkpoint)"""
    gpu_ids: str | None = None
    """the devices the run got (engine executors learn them from the job)"""
    cancelled: bool = False
    """cancelled in the engine, not by this toolkit (e.g. scancel by hand)"""


class Executor(ABC):
    """Starts, watches and stops the steps of claimed jobs. The store stays the source of truth."""

    name = "abstract"
    engine = False
    """True: runs outlive the worker and are adopted by the next one (`attach`); False: they die with it"""

    @classmethod
    def problem(cls) -> str | None:
        """Why this executor cannot run jobs from this machine (one line), or None when it can."""
        return None

    @abstractmethod
    def launch(self, job: Job, *, env: dict[str, str]) -> Run:
        """Start the job at `job.step_index`; raises OSError if it cannot start."""

    @abstractmethod
    def poll(self, run: Run) -> RunStatus:
        """Non-blocking: has the run ended? Advances to the next step when one succeeds."""

    @abstractmethod
    def cancel(self, run: Run, *, force: bool = False) -> None:
        """Ask the run to stop (SIGTERM-like); `force` stops it now (SIGKILL-like)."""

    def refresh(self, runs: list[Run]) -> None:  # noqa: B027 - optional hook
        """Once per worker tick, before `poll` of these runs: fetch their states in one query (engines)."""

    def attach(self, job: Job) -> Run:
        """A run for a job this executor already started (its `engine_id`), for a worker that adopts it."""
        raise NotImplementedError(f"the {self.name} executor cannot adopt running jobs")

    def tail(self, job: Job, lines: int = 50) -> list[str]:
        """The last lines of the job's log."""
        return tail_lines(job.log_path, lines)

    def cleanup_lost(self, job: Job, *, grace_s: float) -> None:  # noqa: B027 - optional hook
        """Stop whatever still runs for a job whose worker was lost (before the job is re-queued)."""



LONG_ARG = 200
"""an argument longer than this (a step's --settings-json) is shortened in the log's step line"""


def shown_step(step) -> str:
    """A step as its log's first line shows it: `python` for the worker's interpreter, and a long argument (the
    settings as JSON, often 1,500 characters) cut to its start, since `jobs show` prints the settings in full."""
    out = []
    for a in step:
        a = "python" if a == PYTHON else a
        out.append(a if len(a) <= LONG_ARG else f"{a[:60]}...<{len(a):,} characters: `jobs show` has them all>")
    return " ".join(out)

class LocalExecutor(Executor):
    """Each step is a subprocess on this machine, in its own process group, logging to the job's log."""

    name = "local"

    def __init__(self, *, cwd: str | Path = PROJECT_ROOT):
        self.cwd = str(cwd)

    def launch(self, job: Job, *, env: dict[str, str]) -> Run:
        tag = f"{job.id}.{job.attempts}.{os.getpid()}.{time.monotonic_ns()}"
        run = Run(job=job, step_index=job.step_index, handle={"env": {**env, TAG: tag}, "tag": tag})
        Path(job.log_path).parent.mkdir(parents=True, exist_ok=True)
        self._start_step(run)
        return run

    def _start_step(self, run: Run) -> None:
        job = run.job
        argv = [sys.executable if a == PYTHON else a for a in job.steps[run.step_index]]
        env = {**os.environ, **run.handle["env"]}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [self.cwd, env.get("PYTHONPATH")]))
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(job.log_path, "ab") as log:
            shown = shown_step(job.steps[run.step_index])
            log.write(f"[cmba-worker {time.strftime('%Y-%m-%d %H:%M:%S')}] job {job.id} attempt {job.attempts} "
                      f"step {run.step_index + 1}/{len(job.steps)}: {shown}\n".encode())
            log.flush()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=self.cwd, env=env, start_new_session=True, close_fds=True,
                                    preexec_fn=_die_with_parent)  # safe: the worker is single-threaded
        run.handle["proc"] = proc
        run.handle["oom_before"] = oom_kills()
        run.pid, run.pid_start = proc.pid, process_start_time(proc.pid)

    def poll(self, run: Run) -> RunStatus:
        if "final" in run.handle:  # polled again after the store was busy: its pid is reaped and may be reused
            return run.handle["final"]
        proc: subprocess.Popen = run.handle["proc"]
        try:  # has the leader exited? WNOWAIT keeps it a zombie so its pid (= the group id) cannot be reused yet
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            info = True
        if info is None:
            return RunStatus(done=False, step_index=run.step_index)
        kill_group(proc.pid, signal.SIGKILL)  # stragglers of the step's group (its own children)
        kill_tagged(TAG, run.handle["tag"])  # and those that left the group (setsid, daemons)
        code = proc.wait()
        if code == 0 and not run.cancelling and run.step_index + 1 < len(run.job.steps):
            run.step_index += 1
            self._start_step(run)
            return RunStatus(done=False, step_index=run.step_index, step_changed=True)
        reason = None
        if code == -signal.SIGKILL and not run.cancelling:
            before, after = run.handle.get("oom_before"), oom_kills()
            if before is not None and after is not None and after > before:
                reason = Reason.OOM_KILLED
        run.handle["final"] = RunStatus(done=True, step_index=run.step_index, returncode=code, reason=reason)
        return run.handle["final"]

    def cancel(self, run: Run, *, force: bool = False) -> None:
        run.cancelling = True
        proc: subprocess.Popen = run.handle["proc"]
        sig = signal.SIGKILL if force else signal.SIGTERM
        if proc.returncode is None:
            kill_group(proc.pid, sig)
        kill_tagged(TAG, run.handle["tag"], sig)  # the whole tree, also what left the process group

    def cleanup_lost(self, job: Job, *, grace_s: float) -> None:
        if not job.pid:
            return
        start = process_start_time(job.pid)
        # Leader alive: stop its group. Leader gone: its group id cannot have been reused while members remain,
        # so those are the step's stragglers. A different process under that pid: the group ended long ago.
        ours = start == job.pid_start if start is not None else bool(process_group_members(job.pid))
        if ours:
            stop_group(job.pid, job.pid_start, grace_s=grace_s)
        kill_tagged("CMBA_JOB_ID", job.id)  # descendants that left the group; no new attempt has started yet


# ------------------------------------------------------------------------------------ registry

EXECUTORS: dict[str, str] = {
    "local": "toolkit.queue.executor:LocalExecutor",
    "slurm": "toolkit.queue.slurm.executor:SlurmExecutor",
}
"""executor name (a job's `executor`) -> its class, as `module:Class` so engines load only when used"""


def executor_class(name: str) -> type[Executor]:
    """The class registered under `name` (InputError naming the known ones otherwise)."""
    from toolkit.errors import InputError

    if name not in EXECUTORS:
        raise InputError(f"executor: '{name}' is not one of {', '.join(EXECUTORS)}")
    module, cls = EXECUTORS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def engine_names() -> list[str]:
    """The registered executors other than the local one (their jobs are submitted to an engine)."""
    return [name for name in EXECUTORS if name != LocalExecutor.name]
