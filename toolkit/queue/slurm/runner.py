"""Inside a Slurm job: the runner that the sbatch script starts on the job's first node.

    python -m toolkit.queue.slurm.runner run <jobs>/<id>/slurm/job.json      # what job.sbatch runs

`job.json` is written by the Slurm executor (toolkit.queue.slurm.executor) when it submits the job: the
remaining steps, where to start, the environment, and for each step how it is launched (`launch`: the
launcher and the nodes it spans, e.g. the multi-GPU train step runs one `toolkit.training.distributed`
launcher per node). The runner starts each remaining step under `srun` (a Slurm step of its own, so that
Slurm's signals reach it), passes SIGTERM / SIGUSR2 / SIGINT on to it, marks each finished step
(`step-K.done`) and the whole job (`done`), and records its exact exit status in `progress.json`, which the
worker reads with the engine's state. A requeued run (preemption, node failure, `scontrol requeue`) skips
the marked steps, so a requeue racing a job that has just finished runs nothing.

`python -m toolkit.slurm run`, `python -m toolkit.jobs.slurm.runner run` and `python -m toolkit.jobs.slurm.executor
run` (sbatch scripts written before this module, or before the queue/study split) forward here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from toolkit.outcomes import ExitCode, shell_status
from toolkit.queue.executor import PYTHON
from toolkit.queue.slurm.executor import _write_json

LEGACY_LAUNCHERS = ("toolkit.training.distributed", "toolkit.distributed")
"""the launcher modules that jobs written before the `launch` field ran their multi-node steps through"""


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


def step_nodes(spec: dict, k: int) -> int:
    """The nodes step `k` spans: its `launch` record, or for a job.json written before that field existed,
    what `legacy_step_nodes` reads from the step's command."""
    launch = spec.get("launch")
    if launch is None:
        return legacy_step_nodes(spec, k)
    return int(launch[k].get("nodes") or 1)


def legacy_step_nodes(spec: dict, k: int) -> int:
    """Compatibility with job.json files without `launch`: a step whose command names the distributed
    launcher spans all the job's nodes, any other step one."""
    distributed = any(module in spec["steps"][k] for module in LEGACY_LAUNCHERS)
    return spec["nodes"] if distributed else 1


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
        progress(n - 1, returncode=ExitCode.SUCCESS)
        return ExitCode.SUCCESS
    forward = _Forward()
    srun = shutil.which("srun") if engine_id else None
    for k in range(spec["start_step"], n):
        if (folder / f"step-{k}.done").exists():
            continue
        progress(k)
        argv = [spec["python"] if a == PYTHON else a for a in steps[k]]
        shown = " ".join(["python" if a == PYTHON else a for a in steps[k]])
        _say(f"[cmba-worker {_stamp()}] job {spec['job']} attempt {spec['attempt']} step {k + 1}/{n} ({where}): {shown}")
        if srun:  # a step of its own, so that Slurm's signals (scancel --signal, --signal=USR2@T) reach it
            nodes = step_nodes(spec, k)
            argv = [srun, f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                    *argv]
        forward.child = subprocess.Popen(argv, env=env, cwd=spec.get("cwd"), stdin=subprocess.DEVNULL)
        while forward.child.poll() is None:  # poll, never block in wait(): the signal handler must run
            time.sleep(0.2)
        code = shell_status(forward.child.returncode)
        if code != ExitCode.SUCCESS:
            progress(k, returncode=code)
            return code
        (folder / f"step-{k}.done").touch()
    (folder / "done").touch()
    progress(n - 1, returncode=ExitCode.SUCCESS)
    return ExitCode.SUCCESS


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "run":
        sys.stderr.write("usage: python -m toolkit.queue.slurm.runner run JOB.json   (inside a Slurm job)\n")
        return ExitCode.BAD_INPUT
    return run_job(args[1])


if __name__ == "__main__":
    sys.exit(main())
