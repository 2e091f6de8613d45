"""How close the time estimate from a speed probe comes to the sweep's real wall time, on the demo model.

    .venv/bin/python bench/bench_estimate.py [--ratios 1:1:1,1:4:1] [--seeds 2] [--max-steps 300] [--slots 1]

In a fresh temporary job store and adapter store: runs the probe of the sweep (`sweep --dry-run --measure`: 6
training steps of its first job and one evaluation batch, in child processes), reads the estimate it leads to,
then queues the sweep and runs it with a worker until the queue is empty, and prints the estimate's range, the
measured wall time (first job start to last job end) and their ratio. Nothing else should run on the machine
meanwhile: the probe and the sweep must see the same load. Figures go to bench/RESULTS.md by hand.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--ratios", default="1:1:1,1:4:1")
    p.add_argument("--seeds", default="2")
    p.add_argument("--max-steps", default="300")
    p.add_argument("--eval-limit", default="400")
    p.add_argument("--slots", default="1")
    args = p.parse_args()

    import torch

    from toolkit.queue.store import JobStore

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "CMBA_JOBS_DIR": f"{tmp}/jobs", "CMBA_ADAPTERS_DIR": f"{tmp}/adapters",
               "HF_HUB_OFFLINE": "1"}
        sweep = [sys.executable, "-m", "toolkit", "sweep", "--model", "demo", "--dataset", "synthetic:shapes",
                 "--ratios", args.ratios, "--seeds", args.seeds, "--budget-rank", "8", "--max-steps", args.max_steps,
                 "--batch-size", "16", "--lr", "5e-3", "--eval-limit", args.eval_limit, "--gpus-per-job", "0",
                 "--json"]
        t0 = time.perf_counter()
        probe = subprocess.run([*sweep, "--dry-run", "--measure"], cwd=ROOT, env=env, capture_output=True, text=True)
        probe_s = time.perf_counter() - t0
        if probe.returncode != 0:
            print(probe.stderr[-2000:])
            return 1
        est = json.loads(probe.stdout)["estimate"]
        # the estimate was made for the slots a worker would start here; run the sweep on the slots asked for
        queued = subprocess.run([*sweep, "--no-worker"], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        sweep_id = json.loads(queued.stdout)["sweep"]
        subprocess.run([sys.executable, "-m", "toolkit", "worker", "--once", "--slots", args.slots, "--poll", "0.2"],
                       cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        jobs = JobStore(f"{tmp}/jobs").list(sweep=sweep_id)
        bad = [(j.name, j.state.value) for j in jobs if j.state.value != "succeeded"]
        if bad:
            print("jobs that did not succeed:", bad)
            return 1
        wall = max(j.finished for j in jobs) - min(j.started for j in jobs)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"Python {platform.python_version()}, torch {torch.__version__}")
    print(f"sweep: demo, ratios {args.ratios}, {args.seeds} seed(s), {args.max_steps} steps, batch 16, "
          f"{args.eval_limit} eval questions, {len(jobs)} jobs (reference included), {args.slots} slot(s)")
    print(f"probe: {probe_s:.1f} s; estimate for {est['slots']} slot(s): {est['low_s']:.0f}–{est['high_s']:.0f} s "
          f"({est['basis']})")
    if str(est["slots"]) != str(args.slots):
        print(f"note: the estimate assumed {est['slots']} slot(s), the sweep ran on {args.slots}")
    print(f"actual wall time: {wall:.0f} s; actual / estimate: {wall / est['high_s']:.2f} of the high end, "
          f"{wall / est['low_s']:.2f} of the low end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
