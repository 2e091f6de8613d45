"""The Slurm executor: the job system's jobs submitted to a Slurm cluster with plain sbatch / sacct / scancel.

    res = SlurmResources(partition="gpu", gpus_per_node=1, cpus_per_gpu=8, mem="64G", time="12:00:00")
    check_resources(res)            # before anything is queued: Slurm reachable, partition, GPUs, time (InputError)
    python -m toolkit sweep ... --executor slurm --partition gpu --gpus-per-node 1 --time 12:00:00
    python -m toolkit worker        # the usual worker submits the Slurm jobs and follows them

The SQLite store stays the source of truth: the worker claims a Slurm job, `launch` writes its steps to
`<jobs>/<id>/slurm/job.json` and sbatches a one-line script that runs `python -m toolkit.jobs.slurm.executor run job.json`
on the first node (`--output` = the job's usual log, appended, so `jobs logs` and the app read it as for
local jobs). That runner starts each remaining step under `srun` (so Slurm's signals reach it; the multi-GPU
train step runs one `toolkit.training.distributed` launcher per node), marks each finished step (`step-K.done`) and the
whole job (`done`), and records its exact exit code in `progress.json`, which the worker reads with the
engine's state. A requeued run (Slurm preemption, node failure, `scontrol requeue`) skips the marked steps:
a requeue racing a job that has just finished runs nothing, and training resumes from its last complete
checkpoint (every job's train step has `--resume`; sbatch's `--signal=USR2@90` makes training checkpoint
before the time limit, and `--checkpoint-every` saves regardless).

Polling is batched: `refresh` runs ONE `squeue` for all of a worker's Slurm jobs per tick (at most every
`CMBA_SLURM_POLL_S` seconds, default 5): the controller's live view, since accounting lags it by seconds (a
running job still PENDING in sacct; a cancelled job recorded as ended while it still checkpoints). ONE
`sacct` for the jobs that ended or that the controller no longer holds adds exit codes and final states. A
job neither knows for `CMBA_SLURM_LOST_S` (default 120 s) is lost: re-queued and resubmitted up to the
attempt cap. Engine states map onto ours in `interpret`.

How the commands run: `CMBA_SLURM_PREFIX` (shell words) is put before every Slurm command, e.g.
`ip netns exec ci` for the CI cluster that scripts/slurm_ci.sh starts in a network namespace;
`CMBA_SLURM_NETNS=ci` is short for that prefix. `SLURM_CONF` passes through as usual. Inside a job, `srun`
runs without the prefix (the job already lives where the cluster is). Compute nodes must see this project
and its Python environment at the same paths (shared storage), or `CMBA_SLURM_PYTHON` names theirs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from toolkit import runs
from toolkit.calculator.spec import parse_int
from toolkit.errors import InputError
from toolkit.jobs.executor import PYTHON, Executor, Run, RunStatus
from toolkit.jobs.store import Job
from toolkit.paths import PROJECT_ROOT

COMMANDS = ("sbatch", "squeue", "sacct", "scancel", "sinfo")
SIGNAL_BEFORE_END_S = 90
"""sbatch --signal=USR2@90: training checkpoints and stops this long before the time limit (a tenth of a
shorter limit), then resumes in a new submission"""
NEEDS = ("the Slurm client commands (sbatch, squeue, sacct, scancel, sinfo: Debian/Ubuntu package slurm-client) "
         "on PATH, SLURM_CONF pointing at the cluster's slurm.conf, and accounting (slurmdbd) so sacct knows job "
         "states; set CMBA_SLURM_PREFIX if the commands must run through a wrapper")
_RESERVED = {"-o": "output", "--output": "output", "-e": "error", "--error": "error", "-J": "job name",
             "--job-name": "job name", "--open-mode": "open mode", "--parsable": "parsable", "--wrap": "wrap",
             "-D": "chdir", "--chdir": "chdir", "-a": "array", "--array": "array", "-N": "nodes", "--nodes": "nodes",
             "-p": "partition", "--partition": "partition", "-t": "time", "--time": "time", "--mem": "mem",
             "-G": "gpus", "--gpus": "gpus", "--gpus-per-node": "gpus per node", "--gres": "gpus per node",
             "--cpus-per-gpu": "cpus per gpu", "-c": "cpus per gpu", "--cpus-per-task": "cpus per gpu",
             "--ntasks-per-node": "tasks per node", "-n": "tasks", "--ntasks": "tasks", "--test-only": "test only"}


# ----------------------------------------------------------------------------------------- commands

def prefix() -> list[str]:
    """What goes before every Slurm command (CMBA_SLURM_PREFIX, or `ip netns exec NS` for CMBA_SLURM_NETNS)."""
    text = os.environ.get("CMBA_SLURM_PREFIX", "").strip()
    if text:
        return shlex.split(text)
    netns = os.environ.get("CMBA_SLURM_NETNS", "").strip()
    return ["ip", "netns", "exec", netns] if netns else []


def slurm(*args: str, timeout: float = 60.0, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a Slurm command (through the prefix); OSError when it cannot be started or times out."""
    try:
        return subprocess.run([*prefix(), *args], capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise OSError(f"`{args[0]}` did not answer within {timeout:.0f} s (is slurmctld reachable?)") from None


def _last_error(proc: subprocess.CompletedProcess) -> str:
    lines = [line.strip() for line in (proc.stderr or proc.stdout or "").splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    text = (errors or lines or [f"exit status {proc.returncode}"])[-1]
    return re.sub(r"^(sbatch|squeue|sacct|scancel|sinfo): (error: )?", "", text)


def slurm_problem(*, cluster: bool = False) -> str | None:
    """Why Slurm jobs cannot be submitted from here (one line), or None. `cluster=True` also asks the
    controller (`sinfo`), which costs a round trip."""
    missing = [c for c in COMMANDS if shutil.which(c) is None]
    if missing:
        return f"executor: slurm needs {NEEDS}; not found here: {', '.join(missing)}"
    if prefix() and shutil.which(prefix()[0]) is None:
        return f"executor: CMBA_SLURM_PREFIX/CMBA_SLURM_NETNS names '{prefix()[0]}', which is not on PATH"
    if cluster:
        try:
            proc = slurm("sinfo", "-h", "-o", "%P", timeout=20)
        except OSError as exc:
            return f"executor: slurm is installed but the cluster does not answer ({exc})"
        if proc.returncode != 0:
            return f"executor: slurm is installed but the cluster does not answer ({_last_error(proc)}); it needs {NEEDS}"
    return None


# ---------------------------------------------------------------------------------------- resources

_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_time(text) -> float:
    """A Slurm time limit in minutes: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S (InputError if malformed)."""
    value = str(text).strip()
    m = _TIME.match(value)
    if not m or value.lower() in ("infinite", "unlimited"):
        raise InputError(f"time: '{value}' is not a Slurm time limit (minutes, H:MM:SS or D-HH:MM:SS)")
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if days is not None:  # D-H[:M[:S]]
        minutes = days * 1440 + a * 60 + (b or 0) + (c or 0) / 60
    elif c is not None:  # H:M:S
        minutes = a * 60 + b + c / 60
    elif b is not None:  # M:S
        minutes = a + b / 60
    else:
        minutes = a
    return minutes


_MEM = re.compile(r"^(\d+)([KMGT]?)B?$", re.IGNORECASE)


def parse_mem(text) -> int:
    """A Slurm memory size ('64G', '500M', '8000' = MB) in megabytes."""
    m = _MEM.match(str(text).strip())
    if not m:
        raise InputError(f"mem: '{text}' is not a memory size (e.g. 64G, 500M; a plain number is megabytes)")
    scale = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[m.group(2).upper()]
    return int(int(m.group(1)) * scale)


def _whole(value, name: str, low: int, high: int) -> int | None:
    number = parse_int(value, name)
    if number is None:
        return None
    if not low <= number <= high:
        raise InputError(f"{name}: must be a whole number in {low}..{high}, got {number}")
    return number


@dataclass(frozen=True)
class SlurmResources:
    """What one Slurm job asks for (the sweep's `--partition --nodes --gpus-per-node ...`)."""

    partition: str | None = None
    """None: the cluster's default partition"""
    nodes: int = 1
    gpus_per_node: int | None = None
    """None until resolved: 1 when the partition's nodes have GPUs, else 0"""
    cpus_per_gpu: int | None = None
    """CPUs per GPU (per node when the job has no GPU); None: the cluster's default"""
    mem: str | None = None
    """memory per node, e.g. 64G; None: the cluster's default"""
    time: str | None = None
    """time limit (minutes, H:MM:SS, D-HH:MM:SS); None: the partition's default"""
    extra: tuple[str, ...] = ()
    """more sbatch options, e.g. ('--qos=high', '--account=lab')"""

    def __post_init__(self):
        set_ = object.__setattr__
        partition = (self.partition or "").strip() or None
        if partition is not None and not re.fullmatch(r"[\w.+-]+", partition):
            raise InputError(f"partition: '{partition}' is not a partition name")
        set_(self, "partition", partition)
        set_(self, "nodes", _whole(self.nodes, "nodes", 1, 1024) or 1)
        set_(self, "gpus_per_node", _whole(self.gpus_per_node, "gpus per node", 0, 64))
        set_(self, "cpus_per_gpu", _whole(self.cpus_per_gpu, "cpus per gpu", 1, 1024))
        mem = (str(self.mem).strip() if self.mem is not None else "") or None
        if mem is not None:
            parse_mem(mem)
        set_(self, "mem", mem)
        time_ = (str(self.time).strip() if self.time is not None else "") or None
        if time_ is not None and parse_time(time_) <= 0:
            raise InputError(f"time: the time limit must be more than 0, got '{time_}'")
        set_(self, "time", time_)
        extra = shlex.split(self.extra) if isinstance(self.extra, str) else [str(x) for x in self.extra or ()]
        for option in extra:
            key = option.split("=", 1)[0]
            if key in _RESERVED:
                raise InputError(f"sbatch options: '{key}' is set by the toolkit (use the {_RESERVED[key]} field)")
            if not option.startswith("-"):
                raise InputError(f"sbatch options: '{option}' is not an option (write --name=value)")
        set_(self, "extra", tuple(extra))
        if self.nodes > 1 and not self.gpus_per_node:
            raise InputError("nodes: a job on several nodes trains with DDP and needs --gpus-per-node >= 1")

    @property
    def gpus(self) -> int:
        return (self.gpus_per_node or 0) * self.nodes

    def sbatch_args(self) -> list[str]:
        args = [f"--nodes={self.nodes}", "--ntasks-per-node=1"]
        if self.partition:
            args.append(f"--partition={self.partition}")
        if self.gpus_per_node:
            args.append(f"--gpus-per-node={self.gpus_per_node}")
            if self.cpus_per_gpu:
                args.append(f"--cpus-per-gpu={self.cpus_per_gpu}")
        elif self.cpus_per_gpu:
            args.append(f"--cpus-per-task={self.cpus_per_gpu}")
        if self.mem:
            args.append(f"--mem={self.mem}")
        if self.time:
            args.append(f"--time={self.time}")
        return args + list(self.extra)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["extra"] = list(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> SlurmResources:
        d = dict(d or {})
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


# ---------------------------------------------------------------------------------- the cluster's shape

@dataclass(frozen=True)
class Partition:
    name: str
    default: bool
    nodes: int
    max_gpus: int
    """most GPUs on one of its nodes"""
    max_cpus: int
    max_mem_mb: int
    time_limit_min: float | None
    """None: no limit"""


def _gpu_count(gres: str) -> int:
    return sum(int(n) for n in re.findall(r"gpu(?::[^:,()]+)?:(\d+)", gres or ""))


def partitions() -> dict[str, Partition]:
    """The cluster's partitions from one `sinfo` (InputError when it does not answer)."""
    proc = slurm("sinfo", "-h", "-o", "%P|%D|%c|%m|%G|%l", timeout=30)
    if proc.returncode != 0:
        raise InputError(f"executor: the Slurm cluster does not answer ({_last_error(proc)})")
    out: dict[str, Partition] = {}
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 6:
            continue
        raw, nodes, cpus, mem, gres, limit = parts
        name = raw.rstrip("*")
        limit_min = None if limit.strip() in ("infinite", "n/a", "") else parse_time(limit.strip())
        mem_mb = int(re.sub(r"\D", "", mem) or 0)
        p = out.get(name)
        out[name] = Partition(
            name=name, default=raw.endswith("*") or (p.default if p else False),
            nodes=int(nodes or 0) + (p.nodes if p else 0), max_gpus=max(_gpu_count(gres), p.max_gpus if p else 0),
            max_cpus=max(int(re.sub(r"\D", "", cpus) or 0), p.max_cpus if p else 0),
            max_mem_mb=max(mem_mb, p.max_mem_mb if p else 0), time_limit_min=limit_min)
    return out


def _partition(res: SlurmResources, known: dict[str, Partition]) -> Partition:
    if res.partition is None:
        default = next((p for p in known.values() if p.default), None)
        if default is None:
            raise InputError(f"partition: this cluster has no default partition; choose one of {', '.join(known)}")
        return default
    if res.partition not in known:
        raise InputError(f"partition: '{res.partition}' is not a partition of this cluster "
                         f"(it has: {', '.join(known) or 'none'})")
    return known[res.partition]


def resolve(res: SlurmResources) -> SlurmResources:
    """Fill in what was left to the cluster: GPUs per node = 1 when the partition's nodes have GPUs, else 0."""
    if res.gpus_per_node is not None:
        return res
    problem = slurm_problem(cluster=True)
    if problem:
        raise InputError(problem)
    p = _partition(res, partitions())
    return SlurmResources.from_dict({**res.to_dict(), "gpus_per_node": 1 if p.max_gpus else 0})


def check_resources(res: SlurmResources) -> SlurmResources:
    """Prove the request can run here before anything is queued (clear InputErrors); returns it resolved.

    Checked against `sinfo` (partition, GPUs / CPUs / memory of its nodes, node count, time limit), then
    `sbatch --test-only` with the real options (catches the rest, extra options included; queues nothing).
    """
    problem = slurm_problem(cluster=True)
    if problem:
        raise InputError(problem)
    res = resolve(res)
    p = _partition(res, partitions())
    where = f"the nodes of partition '{p.name}'"
    if (res.gpus_per_node or 0) > p.max_gpus:
        raise InputError(f"gpus per node: {res.gpus_per_node} asked for, but {where} have "
                         f"{'at most ' + str(p.max_gpus) if p.max_gpus else 'no'} GPU{'s' if p.max_gpus != 1 else ''}")
    if res.nodes > p.nodes:
        raise InputError(f"nodes: {res.nodes} asked for, but partition '{p.name}' has {p.nodes}")
    cpus = (res.cpus_per_gpu or 0) * max(1, res.gpus_per_node or 0)
    if p.max_cpus and cpus > p.max_cpus:
        raise InputError(f"cpus per gpu: {res.cpus_per_gpu} x {max(1, res.gpus_per_node or 0)} GPU(s) = {cpus} CPUs, "
                         f"but {where} have at most {p.max_cpus}")
    if res.mem and p.max_mem_mb and parse_mem(res.mem) > p.max_mem_mb:
        raise InputError(f"mem: {res.mem} asked for, but {where} have at most {p.max_mem_mb} MB")
    if res.time and p.time_limit_min is not None and parse_time(res.time) > p.time_limit_min:
        raise InputError(f"time: {res.time} is over partition '{p.name}''s limit of {p.time_limit_min:g} minutes")
    proc = slurm("sbatch", "--test-only", "--job-name=cmba-check", "--output=/dev/null", *res.sbatch_args(),
                 "--wrap", "true", timeout=30)
    if proc.returncode != 0:
        raise InputError(f"slurm: sbatch refuses this request: {_last_error(proc)}")
    return res


# --------------------------------------------------------------------------------------- states

QUEUED_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "CONFIGURING", "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING",
                  "STAGE_OUT", "PREEMPTED_RUNNING"}
RESUME_STATES = {"PREEMPTED": "preempted", "NODE_FAIL": "node failure", "BOOT_FAIL": "node failure",
                 "REVOKED": "revoked by the federation"}


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
                         reason="requeued by Slurm" if word != "PENDING" else None)
    if word in RUNNING_STATES or not word:
        return RunStatus(done=False, step_index=step_index)
    if word == "COMPLETED":
        return RunStatus(done=True, step_index=step_index, returncode=0 if code is None else code)
    if word == "OUT_OF_MEMORY":
        return RunStatus(done=True, step_index=step_index, returncode=code, reason="out_of_memory")
    if word == "CANCELLED":
        return RunStatus(done=True, step_index=step_index, returncode=code, reason="cancelled in Slurm (scancel)")
    if word in RESUME_STATES:
        return RunStatus(done=True, step_index=step_index, returncode=code, reason=RESUME_STATES[word], resume=True)
    if word == "TIMEOUT":
        return RunStatus(done=True, step_index=step_index, returncode=code, resume=has_checkpoint,
                         reason="time limit" + ("" if has_checkpoint else " (no checkpoint to resume from)"))
    if word == "DEADLINE":
        return RunStatus(done=True, step_index=step_index, returncode=code, reason="deadline reached")
    if code == 143:  # FAILED with 143: a step checkpointed on a signal (preemption notice, time limit near)
        return RunStatus(done=True, step_index=step_index, returncode=code, resume=True,
                         reason="interrupted by Slurm (checkpoint saved)")
    return RunStatus(done=True, step_index=step_index, returncode=1 if code in (None, 0) else code)


def _final(state: str) -> bool:
    word = (state or "").split()[0].upper().rstrip("+") if state else ""
    return bool(word) and word not in QUEUED_STATES and word not in RUNNING_STATES


def lost_status(step_index: int) -> RunStatus:
    return RunStatus(done=True, step_index=step_index, reason="lost (Slurm no longer knows the job)", resume=True)


# ------------------------------------------------------------------------------------------ executor

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
                "gpus_per_node": res.gpus_per_node or 0, "env": env, "cwd": self.cwd}
        _write_json(folder / "job.json", spec)
        script = folder / "job.sbatch"
        script.write_text(f"#!/bin/bash\n# job {job.id} ({job.name}); written by toolkit.jobs.slurm.executor\n"
                          f"exec {shlex.quote(self.python)} -m toolkit.jobs.slurm.executor run {shlex.quote(str(folder / 'job.json'))}\n")
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
            status = RunStatus(**{**status.__dict__, "reason": "requeued by Slurm"})
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
    """Whether the job's run has a complete checkpoint to resume from (a half-written one does not count)."""
    return runs.latest_checkpoint(job.output_dir) is not None


# ------------------------------------------------------------------------ inside the job: the runner

class _Forward:
    """Pass SIGTERM / SIGUSR2 / SIGINT that reach the runner on to the running step (srun forwards them)."""

    def __init__(self):
        self.child: subprocess.Popen | None = None
        self.received: int | None = None
        for sig in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):  # noqa: ARG002 - signal handler signature
        self.received = signum
        if self.child is not None and self.child.poll() is None:
            try:
                self.child.send_signal(signum)
            except ProcessLookupError:
                pass


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")  # the job's log (sbatch --output)
    sys.stdout.flush()


def _stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def run_job(spec_path: str | Path) -> int:
    """What the sbatch script runs on the first node: the job's remaining steps, each under srun."""
    folder = Path(spec_path).parent
    spec = json.loads(Path(spec_path).read_text())
    engine_id = os.environ.get("SLURM_JOB_ID", "")
    restart = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    steps, n = spec["steps"], len(spec["steps"])
    cpus = int(os.environ.get("SLURM_CPUS_ON_NODE") or os.cpu_count() or 1)
    threads = str(max(1, cpus // max(1, spec.get("gpus_per_node") or 1)))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
           "CMBA_NUM_THREADS": threads, **spec.get("env", {})}
    where = f"Slurm job {engine_id} on {socket.gethostname()}" + (f", restart {restart}" if restart else "")

    def progress(k: int, **extra) -> None:
        _write_json(folder / "progress.json", {"engine_id": engine_id, "step_index": k, "restart": restart,
                                               "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
                                               "host": socket.gethostname(), "time": time.time(), **extra})

    if (folder / "done").exists():  # a requeue after the job had finished: nothing is run twice
        _say(f"[cmba-worker {_stamp()}] job {spec['job']}: every step already completed ({where}); nothing to run")
        progress(n - 1, returncode=0)
        return 0
    forward = _Forward()
    srun = shutil.which("srun") if engine_id else None
    for k in range(spec["start_step"], n):
        if (folder / f"step-{k}.done").exists():
            continue
        progress(k)
        argv = [spec["python"] if a == PYTHON else a for a in steps[k]]
        distributed = "toolkit.training.distributed" in steps[k]
        shown = " ".join(["python" if a == PYTHON else a for a in steps[k]])
        _say(f"[cmba-worker {_stamp()}] job {spec['job']} attempt {spec['attempt']} step {k + 1}/{n} ({where}): {shown}")
        if srun:  # a step of its own, so that Slurm's signals (scancel --signal, --signal=USR2@T) reach it
            nodes = spec["nodes"] if distributed else 1
            argv = [srun, f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                    *argv]
        forward.child = subprocess.Popen(argv, env=env, cwd=spec.get("cwd"), stdin=subprocess.DEVNULL)
        while forward.child.poll() is None:  # poll, never block in wait(): the signal handler must run
            time.sleep(0.2)
        code = forward.child.returncode
        code = 128 - code if code < 0 else code
        if code != 0:
            progress(k, returncode=code)
            return code
        (folder / f"step-{k}.done").touch()
    (folder / "done").touch()
    progress(n - 1, returncode=0)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "run":
        sys.stderr.write("usage: python -m toolkit.jobs.slurm.executor run JOB.json   (inside a Slurm job)\n")
        return 2
    return run_job(args[1])


if __name__ == "__main__":
    sys.exit(main())
