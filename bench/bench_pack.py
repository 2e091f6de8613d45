"""Packed training on CPU (issue #28): 4 arms of the mid-size random LLaVA in one pack vs the same arms alone.

    .venv/bin/python bench/bench_pack.py [--rounds 2] [--steps 4] [--batch-size 8] [--threads 1]

The model is bench/bench_train_cpu.py's (CLIP 256 x 6 layers at 224 px = 196 image tokens; Llama 512 x 8 layers,
32,000-token vocabulary; 63 M parameters, random weights, built once under the system temp folder). Four arms
differ in allocation (1:1:1, 1:4:1, 2:4:1, 4:1:1 at a rank-8 budget, so in per-module ranks) and seed (0-3);
fp32, batch 8, LoRA dropout 0.05, synthetic:shapes questions, each arm's own length-grouped data order.

Each round runs, every one in its own subprocess with `--threads` CPU threads (so its peak RSS is its own):
- `pack`: `train_pack` of the 4 arms, fused (every frozen Linear once over the 32 stacked rows);
- `sequential`: the same pack with `fuse=False` (one base copy, the arms one after another; what fusion adds
  is `pack` over `sequential`);
- `singles`: the 4 arms as 4 `engine.train` runs, one after another (today's job per arm).
Throughput is samples over wall time from the end of each run's first step to the end of its last (the first
step, which warms the allocator, is not timed), summed over arms; samples per CPU second of the process are
printed beside it (less sensitive to other processes on a shared machine). The pack's final losses are compared
with the singles' (an arm in a pack equals its single run).

Memory: the pack's peak against **4 single runs side by side**, measured as 4 real concurrent processes (after
the rounds, `--side-by-side-steps` steps each) while the parent samples the summed RSS (every 0.5 s) and PSS
(every 2.5 s) of the live processes (/proc/<pid>/status, /proc/<pid>/smaps_rollup; PSS splits the pages the processes share, such as
the torch libraries, between them). The pack's process is sampled the same way. How the memory splits is
printed from the processes' own figures: RSS after imports (framework), the base weights (parameter bytes), and
the rest (activations of the step, LoRA, optimizer, allocator).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_train_cpu import build_model_dir

DATA = "synthetic:shapes?n=2000"
ARMS = (("1:1:1", 0), ("1:4:1", 1), ("2:4:1", 2), ("4:1:1", 3))
"""(ratio, seed) of the four arms, at a rank-8 budget"""


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _settings(model_dir: Path, out: Path, ratio: str, seed: int, steps: int, batch: int):
    from toolkit.training.settings import TrainSettings

    return TrainSettings(model=str(model_dir), dataset=DATA, ratio=ratio, budget_rank=8, seed=seed, max_steps=steps,
                         batch_size=batch, precision="fp32", progress=False, checkpoint_every=10**6,
                         output=str(out / f"{ratio.replace(':', '-')}-s{seed}"))


def _timed(lines: list[dict], batch: int) -> tuple[float, float, float]:
    """(samples, wall seconds, CPU seconds) from the end of the first step to the end of the last."""
    return batch * (len(lines) - 1), lines[-1]["time"] - lines[0]["time"], lines[-1]["cpu_s"] - lines[0]["cpu_s"]


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


def child(kind: str, model_dir: Path, steps: int, batch: int, arm: int | None, stack_rows: int | None = None) -> dict:
    """One measured run in this process: 'pack', 'sequential' or 'single' (arm index)."""
    import torch

    from toolkit.training.engine import train
    from toolkit.training.pack import train_pack

    rss_import = _rss_mib()
    weights = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if kind == "single":
            ratio, seed = ARMS[arm]
            s = _settings(model_dir, out, ratio, seed, steps, batch)
            doc = train(s, log=lambda m: None)
            folders, mode, losses = [Path(s.output)], "single", [doc["result"]["final_loss"]]
        else:
            settings = [_settings(model_dir, out, r, s, steps, batch) for r, s in ARMS]
            result = train_pack(settings, fuse=kind == "pack", stack_rows=stack_rows, log=lambda m: None)
            folders, mode = [Path(s.output) for s in settings], result.mode
            losses = [d["result"]["final_loss"] for d in result.docs]
        timed = [_timed(_metrics(f), batch) for f in folders]
        if kind != "single":  # the arms step together: their samples share one clock
            timed = [(sum(t[0] for t in timed), timed[0][1], timed[0][2])]
    samples, wall, cpu = (sum(t[i] for t in timed) for i in range(3))
    return {"kind": kind, "mode": mode, "arm": arm, "samples": samples, "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3), "samples_per_s": samples / wall, "samples_per_cpu_s": samples / cpu,
            "final_losses": losses, "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_after_import_mib": round(rss_import, 1), "weights_mib": round(weights, 1),
            "threads": torch.get_num_threads()}


def _proc_mib(pid: int, field: str) -> float:
    """VmRSS (from status: cheap) or Pss (from smaps_rollup: walks the page tables) of a live process in MiB."""
    path = f"/proc/{pid}/status" if field == "VmRSS" else f"/proc/{pid}/smaps_rollup"
    try:
        return next(int(x.split()[1]) for x in Path(path).read_text().splitlines() if x.startswith(field + ":")) / 1024
    except (FileNotFoundError, ProcessLookupError, StopIteration, PermissionError):
        return 0.0


def measured(commands: list[list[str]]) -> tuple[list[dict], float, float]:
    """Run the commands concurrently; their JSON results and the peaks of their summed RSS and PSS (MiB), RSS
    sampled every 0.5 s and PSS every 2.5 s (a step takes seconds, and the sampler must not eat their CPU)."""
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    peak_rss = peak_pss = 0.0
    tick = 0
    while any(p.poll() is None for p in procs):
        live = [p.pid for p in procs if p.poll() is None]
        peak_rss = max(peak_rss, sum(_proc_mib(pid, "VmRSS") for pid in live))
        if tick % 5 == 0:
            peak_pss = max(peak_pss, sum(_proc_mib(pid, "Pss") for pid in live))
        tick += 1
        time.sleep(0.5)
    results = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            sys.stderr.write(err[-3000:])
            raise SystemExit(p.returncode)
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results, peak_rss, peak_pss


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2, help="rounds of pack, sequential pack and singles")
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per arm (the first is not timed)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    p.add_argument("--side-by-side-steps", type=int, default=3, help="steps of the 4 concurrent singles (memory)")
    p.add_argument("--no-sequential", action="store_true", help="skip the sequential pack")
    p.add_argument("--stack-rows", type=int, help="the pack's stack_rows (default: all arms in one stack)")
    p.add_argument("--model-dir", default=str(Path(tempfile.gettempdir()) / "cmba-bench-llava-mid"))
    p.add_argument("--child", choices=("pack", "sequential", "single"), help=argparse.SUPPRESS)
    p.add_argument("--arm", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    model_dir = Path(args.model_dir)
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(child(args.child, model_dir, args.steps, args.batch_size, args.arm, args.stack_rows)),
              flush=True)
        return 0

    import peft
    import torch
    import transformers

    build_model_dir(model_dir)

    def cmd(kind: str, steps: int = args.steps, arm: int | None = None) -> list[str]:
        return [sys.executable, __file__, "--child", kind, "--steps", str(steps), "--batch-size", str(args.batch_size),
                "--threads", str(args.threads), "--model-dir", str(model_dir)] + ([] if arm is None else ["--arm", str(arm)]) \
            + ([] if args.stack_rows is None else ["--stack-rows", str(args.stack_rows)])

    rounds = []
    for r in range(args.rounds):
        row: dict = {"round": r + 1}
        for kind in ("pack",) + (() if args.no_sequential else ("sequential",)):
            (res,), peak_rss, peak_pss = measured([cmd(kind)])
            row[kind] = {**res, "sampled_peak_rss_mib": round(peak_rss, 1), "sampled_peak_pss_mib": round(peak_pss, 1)}
            print(json.dumps({"round": r + 1, **row[kind]}), flush=True)
        singles = []
        for i in range(len(ARMS)):
            (res,), _, _ = measured([cmd("single", arm=i)])
            singles.append(res)
            print(json.dumps({"round": r + 1, **res}), flush=True)
        row["singles"] = {"samples": sum(s["samples"] for s in singles), "wall_s": sum(s["wall_s"] for s in singles),
                          "cpu_s": sum(s["cpu_s"] for s in singles), "final_losses": [s["final_losses"][0] for s in singles]}
        row["singles"]["samples_per_s"] = row["singles"]["samples"] / row["singles"]["wall_s"]
        row["singles"]["samples_per_cpu_s"] = row["singles"]["samples"] / row["singles"]["cpu_s"]
        rounds.append(row)
        pk, sg = row["pack"], row["singles"]
        line = (f"round {r + 1}: pack {pk['samples_per_s']:.3f} samples/s ({pk['samples_per_cpu_s']:.3f}/CPU s) | "
                f"singles one after another {sg['samples_per_s']:.3f} ({sg['samples_per_cpu_s']:.3f}/CPU s) | "
                f"ratio {pk['samples_per_s'] / sg['samples_per_s']:.2f}x wall, "
                f"{pk['samples_per_cpu_s'] / sg['samples_per_cpu_s']:.2f}x CPU")
        if "sequential" in row:
            sq = row["sequential"]
            line += (f" | sequential pack {sq['samples_per_s']:.3f} ({sq['samples_per_cpu_s']:.3f}/CPU s): fusion "
                     f"{pk['samples_per_s'] / sq['samples_per_s']:.2f}x wall, "
                     f"{pk['samples_per_cpu_s'] / sq['samples_per_cpu_s']:.2f}x CPU")
        diffs = [abs(a - b) for a, b in zip(pk["final_losses"], sg["final_losses"])]
        print(line + f" | final losses pack vs singles: max |diff| {max(diffs):.2e}", flush=True)

    side, peak_rss, peak_pss = measured([cmd("single", steps=args.side_by_side_steps, arm=i) for i in range(len(ARMS))])
    pack_rss = statistics.median(r["pack"]["sampled_peak_rss_mib"] for r in rounds)
    pack_pss = statistics.median(r["pack"]["sampled_peak_pss_mib"] for r in rounds)
    pack_own = statistics.median(r["pack"]["peak_rss_mib"] for r in rounds)
    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__, "threads_per_process": args.threads, "batch_size": args.batch_size,
        "steps": args.steps, "arms": len(ARMS), "stack_rows": args.stack_rows,
        "median_samples_per_s_ratio_pack_vs_singles": round(statistics.median(
            r["pack"]["samples_per_s"] / r["singles"]["samples_per_s"] for r in rounds), 3),
        "median_samples_per_cpu_s_ratio_pack_vs_singles": round(statistics.median(
            r["pack"]["samples_per_cpu_s"] / r["singles"]["samples_per_cpu_s"] for r in rounds), 3),
        "side_by_side": {"peak_summed_rss_mib": round(peak_rss, 1), "peak_summed_pss_mib": round(peak_pss, 1),
                         "sum_of_own_peak_rss_mib": round(sum(s["peak_rss_mib"] for s in side), 1),
                         "rss_after_import_mib": [s["rss_after_import_mib"] for s in side]},
        "pack_peak_rss_mib": {"sampled": pack_rss, "own": pack_own, "pss_sampled": pack_pss},
        "peak_rss_ratio_pack_vs_side_by_side": round(pack_rss / peak_rss, 3),
        "peak_pss_ratio_pack_vs_side_by_side": round(pack_pss / peak_pss, 3),
        "pack_split_mib": {"after_import": rounds[0]["pack"]["rss_after_import_mib"],
                           "base_weights": rounds[0]["pack"]["weights_mib"],
                           "rest": round(pack_own - rounds[0]["pack"]["rss_after_import_mib"]
                                         - rounds[0]["pack"]["weights_mib"], 1)},
        "single_split_mib": {"after_import": side[0]["rss_after_import_mib"], "base_weights": side[0]["weights_mib"],
                             "rest": round(statistics.median(s["peak_rss_mib"] for s in side)
                                           - side[0]["rss_after_import_mib"] - side[0]["weights_mib"], 1)},
    }
    if not args.no_sequential:
        summary["median_fusion_gain_wall"] = round(statistics.median(
            r["pack"]["samples_per_s"] / r["sequential"]["samples_per_s"] for r in rounds), 3)
        summary["median_fusion_gain_cpu"] = round(statistics.median(
            r["pack"]["samples_per_cpu_s"] / r["sequential"]["samples_per_cpu_s"] for r in rounds), 3)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
