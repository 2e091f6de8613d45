"""A stand-in training job for the job-system tests, plus helpers the tests run in several processes.

As a script it behaves like `python -m toolkit train` as far as the worker can see:

    python tests/helpers/jobscript.py --output DIR --steps 20 [--step-time 0.05] [--resume] [--checkpoint-every 2]
        [--fail-at K --exit-code C --message TEXT [--first-run-only]] [--spawn-child] [--ignore-term]

It appends one line per step to DIR/metrics.jsonl (the shared metrics contract), saves checkpoints
atomically as DIR/checkpoints/step-N (rename of a finished temp folder), resumes from the last one with
`--resume`, records every run in DIR/runs.jsonl, saves a checkpoint and exits 143 at the next step
boundary on SIGTERM, and writes DIR/done.json last. `--spawn-child` leaves a grandchild that ignores
SIGTERM in the job's process group (its pid in DIR/child.pid): only a group SIGKILL removes it.

Tests wait on state (job store rows, files, process exit), never on sleeps: `wait_for(predicate, what=...)`
polls until the predicate is truthy. `PATIENCE` is the one last-resort bound for such waits and for the
timeouts of real subprocesses (training, the app, a worker): a hung test fails after it, a slow machine
(both cores busy, training at well under 1 sample/s) still passes well inside it. `CMBA_TEST_PATIENCE`
(seconds) overrides it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = str(Path(__file__).resolve())
PATIENCE = float(os.environ.get("CMBA_TEST_PATIENCE", "900"))
"""seconds: the last-resort bound of every wait on state; only a hung test reaches it"""


def wait_for(predicate, *, timeout: float = PATIENCE, what: str = "condition", interval: float = 0.05):
    """Poll `predicate()` until it returns something truthy and return that; fail after `timeout` seconds.

    Example: `pid = wait_for(lambda: store.get(job_id).pid, what="the job to start")`
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def last_checkpoint(out: Path) -> int:
    steps = [int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("step-*") if (p / "state.json").exists()]
    return max(steps, default=0)


def save_checkpoint(out: Path, step: int) -> None:
    if (out / "checkpoints" / f"step-{step}").exists():
        return
    tmp = out / "checkpoints" / f".tmp-step-{step}"
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "state.json").write_text(json.dumps({"step": step}))
    os.replace(tmp, out / "checkpoints" / f"step-{step}")


def train(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--output", required=True)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--step-time", type=float, default=0.05)
    p.add_argument("--checkpoint-every", type=int, default=2)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--fail-at", type=int)
    p.add_argument("--exit-code", type=int, default=1)
    p.add_argument("--message", default="error: simulated failure")
    p.add_argument("--first-run-only", action="store_true", help="fail only on the first run of this output")
    p.add_argument("--spawn-child", action="store_true")
    p.add_argument("--ignore-term", action="store_true")
    args = p.parse_args(argv)

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    stop = []
    signal.signal(signal.SIGTERM, signal.SIG_IGN if args.ignore_term else (lambda *_: stop.append(1)))
    start = last_checkpoint(out) if args.resume else 0
    runs = out / "runs.jsonl"
    previous_runs = len(runs.read_text().splitlines()) if runs.exists() else 0
    with runs.open("a") as fh:
        fh.write(json.dumps({"pid": os.getpid(), "pgid": os.getpgid(0), "start_step": start,
                             "attempt": os.environ.get("CMBA_JOB_ATTEMPT"),
                             "omp_threads": os.environ.get("OMP_NUM_THREADS"),
                             "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES")}) + "\n")
    if args.spawn_child:
        child = subprocess.Popen([sys.executable, "-c", "import signal, time\n"
                                  "signal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)"])
        (out / "child.pid").write_text(str(child.pid))
    print(f"training from step {start} to {args.steps}", flush=True)
    t0 = time.time()
    for step in range(start + 1, args.steps + 1):
        time.sleep(args.step_time)
        with (out / "metrics.jsonl").open("a") as fh:
            elapsed = time.time() - t0
            fh.write(json.dumps({"step": step, "max_steps": args.steps, "epoch": step / args.steps,
                                 "loss": 2.0 / step, "lr": 1e-4, "samples_per_s": 10.0, "elapsed_s": elapsed,
                                 "eta_s": elapsed / (step - start) * (args.steps - step), "time": time.time()}) + "\n")
        if step % args.checkpoint_every == 0:
            save_checkpoint(out, step)
        if args.fail_at == step and not (args.first_run_only and previous_runs):
            print(args.message, file=sys.stderr, flush=True)
            return args.exit_code
        if stop:
            save_checkpoint(out, step)
            print(f"SIGTERM: saved checkpoint at step {step}", flush=True)
            return 143
    (out / "done.json").write_text(json.dumps({"steps": args.steps}))
    print("done", flush=True)
    return 0


def job_steps(output: str | Path, *extra: str, steps: int = 10, step_time: float = 0.05) -> list[list[str]]:
    """One-step job argv running this script (`{python}` is the worker's interpreter)."""
    return [["{python}", SCRIPT, "--output", str(output), "--steps", str(steps), "--step-time", str(step_time),
             "--resume", *extra]]


# ------------------------------------------------------------------- run in forked test processes

def submit_many(folder: str, prefix: str, n: int) -> None:
    from toolkit.queue.store import JobStore, NewJob

    store = JobStore(folder)
    for i in range(n):
        store.submit(NewJob(name=f"{prefix}-{i}", steps=[["true"]]))


def claim_all(folder: str, out_file: str) -> None:
    from toolkit.queue.store import JobStore, WorkerInfo

    store = JobStore(folder)
    me = WorkerInfo(id=f"claimer-{os.getpid()}", pid=os.getpid(), start_time=None, host="test")
    claimed = []
    while (job := store.claim(me)) is not None:
        claimed.append(job.id)
    Path(out_file).write_text(json.dumps(claimed))


def submit_plan(folder: str, plan) -> None:
    from toolkit.queue.store import JobStore
    from toolkit.study.sweep import submit_sweep

    submit_sweep(plan, store=JobStore(folder))


if __name__ == "__main__":
    sys.exit(train())
