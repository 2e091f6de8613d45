"""The Slurm cluster as the job system sees it: its commands, and what one job may ask of it.

    problem = slurm_problem(cluster=True)     # why jobs cannot be submitted from here (one line), or None
    res = SlurmResources(partition="gpu", gpus_per_node=1, cpus_per_gpu=8, mem="64G", time="12:00:00")
    res = check_resources(res)                # before anything is queued: partition, GPUs, time (InputError)
    proc = slurm("squeue", "-h", "-j", "42")  # any Slurm command, through the prefix

How the commands run: `CMBA_SLURM_PREFIX` (shell words) is put before every Slurm command, e.g.
`ip netns exec ci` for the CI cluster that scripts/slurm_ci.sh starts in a network namespace;
`CMBA_SLURM_NETNS=ci` is short for that prefix. `SLURM_CONF` passes through as usual. Inside a job, `srun`
runs without the prefix (the job already lives where the cluster is). Compute nodes must see this project
and its Python environment at the same paths (shared storage), or `CMBA_SLURM_PYTHON` names theirs.

A request (`SlurmResources`, the sweep's `--partition --nodes --gpus-per-node ...`) is validated on its own
in `__post_init__`, then against the cluster: `sinfo` for the partitions' nodes and limits, then
`sbatch --test-only` with the real options. The executor (toolkit.queue.slurm.executor) submits with it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import asdict, dataclass

from toolkit.calculator.spec import parse_int
from toolkit.errors import InputError

COMMANDS = ("sbatch", "squeue", "sacct", "scancel", "sinfo")
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
