"""The README's demo study, packed vs job per arm, through the job system (issue #28).

    .venv/bin/python bench/bench_pack_study.py [--seeds 5] [--slots 2] [--modes arms,packed] [--eval-limit 2000]

Both modes queue the same study: the demo model, synthetic:shapes, ratios 1:1:1, 1:4:1, 4:1:1, 1:1:4 x `--seeds`
seeds at a rank-8 budget, the demo's default schedule (lr 2e-3, 300 steps, batch 16), every arm evaluated on
`--eval-limit` validation questions, plus the base model's reference evaluation, as `bench/demo_study.sh`
queues it. Each mode gets its own throwaway jobs and adapters folders and one `worker --slots N --threads 1
--once`, timed from queueing to the last job's end (the wall time a user waits):

- `arms`: one job per arm (train, then evaluate: two processes, each loading the base);
- `packed`: `sweep --pack --pack-size ceil(arms / slots)`, one job per pack (`python -m toolkit pack`: the arms
  trained fused on one base, then evaluated in the same process), so every slot holds one pack;
- `halving`: the same arms with `--search halving` (rungs 75, 150, 300; eta 2; no confirmation), each rung a new
  job per surviving arm that resumes from its checkpoint (toolkit.study.halving);
- `packed-halving`: the same search inside one pack (toolkit.study.packsearch): rungs evaluated in the running
  pack, dropped ratios leave it, nothing re-queued; it runs with `--threads 2` on one slot (one process: its one
  pack is every arm), the job-per-arm modes with 1 thread on each of `--slots` slots.

`--fusion` first measures what fusing buys on this model: 20 optimizer steps of one arm alone, then of 4 arms
(1:1:1, 1:4:1, 4:1:1, 1:1:4; seeds 0-3) in one fused pack, each in its own 1-thread subprocess; it prints the
training time per arm-step of each (the job system's start-up, data and evaluation left out).

Then the two modes' accuracies are compared arm by arm (an arm trained in a pack equals its single run up to
float rounding, so its accuracy should agree to a question or so), and the ratio of wall times is printed.
Prints one JSON line per mode and a summary line; nothing in the user's own jobs or adapters folders is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RATIOS = "1:1:1,1:4:1,4:1:1,1:1:4"


FUSION = r"""
import json, sys, tempfile, torch
torch.set_num_threads(1)
from toolkit.training.settings import TrainSettings
from toolkit.training.pack import train_pack
n, steps = int(sys.argv[1]), int(sys.argv[2])
ratios = ["1:1:1", "1:4:1", "4:1:1", "1:1:4"]
out = tempfile.mkdtemp()
arms = [TrainSettings(model="demo", dataset="synthetic:shapes", ratio=ratios[i % 4], budget_rank=8, seed=i,
                      max_steps=steps, output=f"{out}/a{i}", progress=False) for i in range(n)]
r = train_pack(arms, log=lambda m: None)
print(json.dumps({"arms": n, "mode": r.mode, "train_s": r.train_time_s,
                  "ms_per_arm_step": round(1000 * r.train_time_s / (n * steps), 1)}))
"""


def fusion(steps: int = 20) -> dict:
    out = {}
    for n in (1, 4):
        r = subprocess.run([sys.executable, "-c", FUSION, str(n), str(steps)], cwd=ROOT, capture_output=True,
                           text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        out[n] = json.loads(r.stdout.strip().splitlines()[-1])
    return {"fusion": out, "fused_vs_alone_per_arm_step": round(out[1]["ms_per_arm_step"] / out[4]["ms_per_arm_step"], 2)}


def runs_metrics(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def run_mode(mode: str, *, seeds: int, slots: int, eval_limit: int, folder: Path) -> dict:
    env = {**os.environ, "CMBA_JOBS_DIR": str(folder / "jobs"), "CMBA_ADAPTERS_DIR": str(folder / "adapters")}
    py = [sys.executable, "-m", "toolkit"]
    arms = len(RATIOS.split(",")) * seeds
    pack = {"packed": ["--pack", "--pack-size", str(-(-arms // slots))], "packed-halving": ["--pack"]}.get(mode, [])
    search = ["--search", "halving", "--max-steps", "300", "--no-confirm"] if mode.endswith("halving") else []
    worker = (["--slots", "1", "--threads", str(slots)] if mode == "packed-halving"
              else ["--slots", str(slots), "--threads", "1"])
    start = time.perf_counter()
    cpu0 = os.times()
    subprocess.run([*py, "sweep", "--model", "demo", "--dataset", "synthetic:shapes", "--ratios", RATIOS,
                    "--seeds", str(seeds), "--budget-rank", "8", "--eval-limit", str(eval_limit), "--no-worker",
                    "--json", *pack, *search], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    with open(folder / "worker.log", "wb") as log:  # exit 1: some job failed (its state is reported below)
        subprocess.run([*py, "worker", *worker, "--once"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    cpu1 = os.times()
    jobs = json.loads(subprocess.run([*py, "jobs", "list", "--json"], cwd=ROOT, env=env, check=True,
                                     capture_output=True, text=True).stdout)
    states = {}
    for j in jobs:
        states[j["state"]] = states.get(j["state"], 0) + 1
    scores = {}
    for results in sorted((folder / "adapters").glob("*/eval/*/results.json")):
        doc = json.loads(results.read_text())
        arm = re.sub(r"-[0-9a-f]{8}(?=$|-step)", "", results.parent.parent.parent.name)  # sweep ids differ by mode
        scores[arm] = doc["scores"]["overall"]
    steps = sum(len(runs_metrics(p)) for p in (folder / "adapters").glob("*/metrics.jsonl"))
    return {"mode": mode, "wall_s": round(wall, 1), "jobs": len(jobs), "states": states, "optimizer_steps": steps,
            "children_cpu_s": round(cpu1.children_user + cpu1.children_system - cpu0.children_user
                                    - cpu0.children_system, 1),
            "scores": scores}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--slots", type=int, default=2)
    p.add_argument("--eval-limit", type=int, default=2000)
    p.add_argument("--modes", default="arms,packed", help="any of arms, packed, halving, packed-halving ('' for none)")
    p.add_argument("--keep", metavar="DIR", help="keep each mode's jobs, adapters and worker log under DIR")
    p.add_argument("--fusion", action="store_true", help="first, ms per arm-step alone vs in a fused pack of 4")
    args = p.parse_args()
    import torch

    print(json.dumps({"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                      "torch": torch.__version__, "load": os.getloadavg()}), flush=True)
    if args.fusion:
        print(json.dumps(fusion()), flush=True)
    out = {}
    with tempfile.TemporaryDirectory(prefix="cmba-pack-study-") as tmp:
        tmp = args.keep or tmp
        for mode in filter(None, args.modes.split(",")):
            folder = Path(tmp) / mode
            folder.mkdir(parents=True)
            out[mode] = run_mode(mode, seeds=args.seeds, slots=args.slots, eval_limit=args.eval_limit, folder=folder)
            print(json.dumps({**out[mode], "load_after": os.getloadavg()}), flush=True)
    for one, packed in (("arms", "packed"), ("halving", "packed-halving")):
        if {one, packed} <= set(out):
            a, b = out[one], out[packed]
            common = sorted(set(a["scores"]) & set(b["scores"]))
            diffs = [abs(a["scores"][k] - b["scores"][k]) for k in common]
            print(json.dumps({"compared": f"{packed} vs {one}", "speedup": round(a["wall_s"] / b["wall_s"], 2),
                              "cpu_ratio": round(a["children_cpu_s"] / b["children_cpu_s"], 2)
                              if b["children_cpu_s"] else None, "arms_compared": len(common),
                              "max_accuracy_difference": round(max(diffs), 3) if diffs else None}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
