"""Several GPUs in one job: the DDP launcher (torchrun) and the helpers `train` uses on every rank.

    python -m toolkit.training.distributed --nproc-per-node 2 -- -m toolkit train ...     # one node, 2 processes
    python -m toolkit.training.distributed -- -m toolkit train ...     # processes = visible GPUs; nodes from Slurm

A sweep job asking for n > 1 GPUs gets this launcher in front of its train step. It starts `torchrun`
(torch.distributed.run) with one process per GPU: on one node with a standalone rendezvous; inside a Slurm
step over several nodes (one launcher per node, started by the Slurm runner with srun) with the rendezvous
taken from Slurm's environment: node rank SLURM_NODEID, master = the first host of SLURM_STEP_NODELIST
(`scontrol show hostnames`), port derived from SLURM_JOB_ID. A world of one process runs the command as is.
SIGTERM / SIGUSR2 / SIGINT are passed on to torchrun, which passes them to every rank; the ranks agree on
the step to stop at (`DistContext.any`), rank 0 saves the checkpoint, all exit `ExitCode.INTERRUPTED`
(toolkit.outcomes), and so does the launcher.

Inside `train`, `context()` returns the process's place in the job, one object whatever the launch (as
Lightning Fabric does, or nanoGPT's `master_process` computed once), so the loop has no branches for it:

    ctx = context()                       # SingleProcess (main, world 1) or the torchrun DistContext
    ctx.plan_batches(batch_size, grad_accum)
    first, size = ctx.micro_batch(step, micro, batch_size, grad_accum)
    ctx.reduce_grads(params); loss = ctx.mean(loss); stop = ctx.any(stop); ctx.barrier()

A `SingleProcess` does what one process always did: its collectives return their input or do nothing and
its micro-batches are the plain formula. A `DistContext` has the process group (nccl on GPUs, gloo on CPU),
this rank's device, and how the user's batch is
split so that the global batch per optimizer step (per-device batch x accumulation x world size) stays the
`--batch-size` x `--grad-accum` asked for: accumulation is divided first (same micro-batches as one
process, so the same numbers), else the batch. The LoRA gradients are averaged over ranks once per
optimizer step in one flat all-reduce: what DDP's bucketed reduction does for these parameters, without its
hooks, so modules that get no gradient (budget spent on dead modules) need no special handling. Only rank 0
writes metrics, checkpoints, adapter files and cmba.json.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from toolkit.errors import InputError
from toolkit.outcomes import ExitCode, shell_status

PORT_BASE = 20000


# ------------------------------------------------------------------------------------- the launcher

@dataclass(frozen=True)
class Launch:
    """Where this launcher's processes fit in the job."""

    nproc_per_node: int
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def torchrun_args(self) -> list[str]:
        args = ["--nnodes", str(self.nnodes), "--nproc-per-node", str(self.nproc_per_node), "--max-restarts", "0",
                "--signals-to-handle", "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR2"]
        if self.nnodes == 1:
            return args + ["--standalone"]
        return args + ["--node-rank", str(self.node_rank), "--master-addr", str(self.master_addr),
                       "--master-port", str(self.master_port)]


def visible_gpus(env: dict | None = None) -> int:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else what torch sees."""
    env = os.environ if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([g for g in visible.split(",") if g.strip() and g.strip() != "-1"])
    import torch

    return torch.cuda.device_count()


def _first_host(nodelist: str) -> str:
    """The first host of a Slurm node list ('gpu[01-04],cpu7' -> 'gpu01'), via scontrol when present."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             timeout=30).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    head = nodelist.split(",")[0]
    if "[" in head:
        prefix, rest = head.split("[", 1)
        return prefix + rest.split("]")[0].split(",")[0].split("-")[0]
    return head


def plan_launch(nproc_per_node: int | None = None, env: dict | None = None) -> Launch:
    """Processes per node (given, or the visible GPUs, at least 1) and the nodes of the Slurm step."""
    env = os.environ if env is None else env
    nproc = nproc_per_node or max(1, visible_gpus(env))
    nnodes = int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_NNODES") or 1) if env.get("SLURM_JOB_ID") else 1
    if nnodes <= 1:
        return Launch(nproc_per_node=nproc)
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or ""
    return Launch(nproc_per_node=nproc, nnodes=nnodes, node_rank=int(env.get("SLURM_NODEID") or 0),
                  master_addr=_first_host(nodelist), master_port=PORT_BASE + int(env["SLURM_JOB_ID"]) % 20000)


MODULES = ("toolkit.training.distributed", "toolkit.distributed")
"""this launcher's module names (the second: the entry point kept for jobs queued before the package layout)"""


def is_launch(step: list[str]) -> bool:
    """Whether a job step (`[python, -m, module, ...]`) runs this launcher, i.e. spans the job's GPUs and nodes."""
    return len(step) >= 3 and step[1] == "-m" and step[2] in MODULES


def python_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(torchrun's script part, plain python argv) of `-m module args` or `script.py args`."""
    if not argv:
        raise InputError("launch: give the command after --, e.g. -- -m toolkit train ...")
    if argv[0] == "-m":
        if len(argv) < 2:
            raise InputError("launch: -m needs a module name")
        return ["--module", argv[1], *argv[2:]], argv
    return argv, argv


def launch(argv: list[str], *, nproc_per_node: int | None = None) -> int:
    """Run `python ARGV` as `nproc_per_node` x nodes DDP processes (torchrun); returns the exit status."""
    plan = plan_launch(nproc_per_node)
    script, plain = python_argv(argv)
    if plan.world_size == 1:
        os.execv(sys.executable, [sys.executable, *plain])
    env = dict(os.environ)
    threads = int(env.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CMBA_NUM_THREADS"):
        env[var] = str(max(1, threads // plan.nproc_per_node))
    cmd = [sys.executable, "-m", "torch.distributed.run", *plan.torchrun_args(), *script]
    sys.stderr.write(f"[cmba-distributed] {plan.world_size} processes ({plan.nnodes} node(s) x "
                     f"{plan.nproc_per_node}), node rank {plan.node_rank}\n")
    sys.stderr.flush()
    received: list[int] = []
    proc = subprocess.Popen(cmd, env=env, preexec_fn=_term_with_parent)  # noqa: PLW1509 - we are single-threaded

    def forward(signum, frame):  # noqa: ARG001 - signal handler signature
        received.append(signum)
        if proc.poll() is None:
            proc.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT):
        signal.signal(sig, forward)
    while proc.poll() is None:  # poll, never block in wait(): the handler must run promptly
        time.sleep(0.2)
    code = proc.returncode
    if code != ExitCode.SUCCESS and received:
        return ExitCode.INTERRUPTED  # stopped by a signal; the ranks saved a checkpoint first
    return shell_status(code)


def _term_with_parent() -> None:
    """In a child: receive `sig` when the parent dies (Linux), so no rank outlives a killed launcher."""
    _pdeathsig(signal.SIGTERM)


def _pdeathsig(sig: int) -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        sys.stderr.write("usage: python -m toolkit.training.distributed [--nproc-per-node N] -- -m toolkit train ...\n")
        return ExitCode.BAD_INPUT
    cut = argv.index("--")
    p = argparse.ArgumentParser(prog="python -m toolkit.training.distributed")
    p.add_argument("--nproc-per-node", type=int, help="processes per node (default: the visible GPUs)")
    args = p.parse_args(argv[:cut])
    try:
        return launch(argv[cut + 1:], nproc_per_node=args.nproc_per_node)
    except InputError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return ExitCode.BAD_INPUT


# ---------------------------------------------------------------------------------- inside a rank

def split_batch(batch_size: int, grad_accum: int, world: int) -> tuple[int, int]:
    """(per-device batch, per-device accumulation) keeping batch_size x grad_accum = b x a x world."""
    if grad_accum % world == 0:
        return batch_size, grad_accum // world
    if batch_size % world == 0:
        return batch_size // world, grad_accum
    raise InputError(f"batch-size: the global batch {batch_size} x {grad_accum} (batch-size x grad-accum) cannot be "
                     f"split evenly over {world} processes; make --batch-size or --grad-accum a multiple of {world}")


@dataclass
class SingleProcess:
    """One process, no process group: every collective is a no-op (or returns its input unchanged)."""

    device: object
    """torch.device of the process: cuda when there is one, else cpu"""
    batch: int = 0
    """micro-batch (set by `plan_batches`: the user's --batch-size)"""
    accum: int = 0
    """accumulation steps (the user's --grad-accum)"""
    rank = 0
    world = 1
    main = True

    def plan_batches(self, batch_size: int, grad_accum: int) -> None:
        self.batch, self.accum = batch_size, grad_accum

    def micro_batch(self, step: int, micro: int, batch_size: int, grad_accum: int) -> tuple[int, int]:
        """(first sample index, count) of micro-batch `micro` of optimizer step `step`."""
        return (step * grad_accum + micro) * batch_size, batch_size

    def mean(self, value: float) -> float:
        return value

    def any(self, flag: bool) -> bool:
        return flag

    def reduce_grads(self, params) -> None:
        pass

    def broadcast_params(self, params) -> None:
        pass

    def broadcast_text(self, text: str | None) -> str | None:
        return text

    def barrier(self) -> None:
        pass

    def run_on_main(self, fn) -> None:
        fn()

    def describe(self) -> dict | None:
        """What cmba.json records under result.distributed (nothing for one process)."""
        return None


@dataclass
class DistContext:
    """This rank's place in the process group, and the collective operations `train` needs."""

    rank: int
    world: int
    local_rank: int
    backend: str
    device: object
    """torch.device of this rank"""
    batch: int = 0
    """per-device micro-batch (set by `plan_batches`)"""
    accum: int = 0
    """per-device accumulation steps"""

    @property
    def main(self) -> bool:
        return self.rank == 0

    def plan_batches(self, batch_size: int, grad_accum: int) -> None:
        self.batch, self.accum = split_batch(batch_size, grad_accum, self.world)

    def micro_batch(self, step: int, micro: int, batch_size: int, grad_accum: int) -> tuple[int, int]:
        """(first sample index, count) of this rank's `micro`-th micro-batch of optimizer step `step`.

        Divided accumulation: rank r's micro j is the single-process micro-batch r*accum + j (identical
        batches). Divided batch: micro j is slice r of the single-process micro-batch j.
        """
        if self.batch == batch_size:
            return (step * grad_accum + self.rank * self.accum + micro) * batch_size, batch_size
        return (step * grad_accum + micro) * batch_size + self.rank * self.batch, self.batch

    def mean(self, value: float) -> float:
        import torch
        import torch.distributed as dist

        t = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on any (e.g. a stop signal reached one of them)."""
        import torch
        import torch.distributed as dist

        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def reduce_grads(self, params) -> None:
        """Average the gradients of `params` over ranks (a missing gradient counts as zeros)."""
        import torch
        import torch.distributed as dist

        params = list(params)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1).to(torch.float32) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(g).to(g.dtype)
            offset += n

    def broadcast_params(self, params) -> None:
        """Rank 0's values for `params` everywhere (identical starting weights)."""
        import torch.distributed as dist

        for p in params:
            dist.broadcast(p.data, src=0)

    def broadcast_text(self, text: str | None) -> str | None:
        """Rank 0's `text` on every rank (e.g. an error only rank 0 could see)."""
        import torch.distributed as dist

        box = [text]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def run_on_main(self, fn) -> None:
        """`fn()` on rank 0 alone; its InputError (a refusal only rank 0 could see) is raised on every rank."""
        problem = None
        if self.main:
            try:
                fn()
            except InputError as exc:
                problem = str(exc)
        problem = self.broadcast_text(problem)
        if problem:
            raise InputError(problem)

    def describe(self) -> dict:
        """What cmba.json records under result.distributed."""
        return {"world_size": self.world, "backend": self.backend, "per_device_batch_size": self.batch,
                "per_device_grad_accum": self.accum}

    def _comm_device(self):
        return self.device if self.backend == "nccl" else "cpu"


_CONTEXT: DistContext | None = None


def context() -> SingleProcess | DistContext:
    """This process's context: the torchrun rank's `DistContext`, else a `SingleProcess` on the best device."""
    dist = from_env()
    if dist is not None:
        return dist
    import torch

    return SingleProcess(device=torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))


def from_env() -> DistContext | None:
    """The process group of a torchrun-launched rank (created once), or None for a single process."""
    global _CONTEXT
    world = int(os.environ.get("WORLD_SIZE") or 1)
    if world <= 1:
        return None
    if _CONTEXT is not None:
        return _CONTEXT
    import atexit
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    _pdeathsig(signal.SIGKILL)  # torchrun gone (killed) -> this rank goes too, instead of waiting in a collective
    local_rank = int(os.environ.get("LOCAL_RANK") or 0)
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        backend, device = "nccl", torch.device("cuda", local_rank)
    else:
        backend, device = "gloo", torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
        atexit.register(dist.destroy_process_group)
    _CONTEXT = DistContext(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank,
                           backend=backend, device=device)
    return _CONTEXT


if __name__ == "__main__":
    sys.exit(main())
