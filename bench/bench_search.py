"""Successive halving over a simplex-lattice design against the full grid of the same arms, on the demo model,
through the job system (a real worker, 2 slots). Prints the figures of bench/RESULTS.md ("designed study").

    .venv/bin/python bench/bench_search.py                       # lattice:3, 2 seeds, 300 steps (~20 + ~20 min)
    .venv/bin/python bench/bench_search.py --design simplex-centroid --seeds 2 --max-steps 100 --rungs 25,50,100

Both runs go to one throwaway folder (printed). "Search time" is from the first job's start to the last rung's
last job's end (the confirmation it then queues is timed apart); "grid time" likewise for the full grid. Equal
final quality: the recommendation of each (Scheffé fit + bootstrap), and the search's winner's accuracy against
the grid's best arm, both at the full schedule on the same selection questions.
"""

from __future__ import annotations

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


def sh(*args: str, env: dict) -> str:
    return subprocess.run([sys.executable, "-m", "toolkit", *args], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True).stdout


def span(store, sweep_id: str, pred=lambda j: True) -> float:
    jobs = [j for j in store.list(sweep=sweep_id) if pred(j) and j.started and j.finished]
    return max(j.finished for j in jobs) - min(j.started for j in jobs)


def figures_of(folder: Path, name: str, args) -> dict:
    """The figures of one finished run (search or grid) from its job store and adapters."""
    from toolkit.evaluation import surface
    from toolkit.queue.store import JobStore
    from toolkit.study import halving
    from toolkit.study.confirm import sweep_rows

    os.environ.update({"CMBA_JOBS_DIR": str(folder / "jobs"), "CMBA_ADAPTERS_DIR": str(folder / "adapters")})
    store = JobStore(folder / "jobs")
    sweeps = [s for s in store.sweeps() if not s["spec"].get("name", "").endswith("-confirm")]
    sweep = min(sweeps, key=lambda s: s["created"])["id"]  # the study (a confirmation comes later)
    jobs = store.list(sweep=sweep)
    fig = {"jobs": len(jobs), "states": sorted({j.state.value for j in jobs}), "span_s": round(span(store, sweep), 1)}
    rows = sweep_rows(store, sweep)
    full = [r for r in rows if (r["settings"] or {}).get("training.max_steps") == int(args.max_steps)]
    by_arm: dict[str, list[float]] = {}
    for r in full:
        by_arm.setdefault(r["ratio"], []).append(r["accuracy"])
    fig["full_schedule_arms"] = {a: round(sum(v) / len(v), 2) for a, v in sorted(by_arm.items())}
    rungs = [0] + [int(x) for x in args.rungs.split(",")]
    fig["train_steps"] = sum(rungs[j.meta["rung"]] - rungs[j.meta["rung"] - 1] if "rung" in j.meta
                             else int(args.max_steps) for j in jobs)
    fig["evaluations"] = len(jobs)
    rec = surface.recommend(rows)
    if rec is not None:
        fig["recommendation"] = {"ratio": rec.ratio, "gain": round(rec.gain, 2),
                                 "gain_ci": [round(x, 2) for x in rec.gain_ci], "model": rec.model,
                                 "optimum": [round(x, 3) for x in rec.optimum], "confirm": rec.confirm}
    if name == "search":
        st = halving.status(store, sweep)
        fig["rungs"] = [{"rung": e["rung"], "steps": e["steps"], "arms": len(e["decisions"]),
                         "kept": [d["arm"] for d in e["decisions"] if d["keep"]]} for e in st["rungs"]]
        conf = st.get("confirmation") or {}
        fig["confirmation"] = conf
        if conf.get("sweep") and store.list(sweep=conf["sweep"]):
            fig["confirmation_span_s"] = round(span(store, conf["sweep"]), 1)
            accs: dict[str, list[float]] = {}
            for r in sweep_rows(store, conf["sweep"]):
                accs.setdefault(r["ratio"], []).append(r["accuracy"])
            fig["confirmation_means"] = {a: [round(sum(v) / len(v), 2), len(v)] for a, v in accs.items()}
    return fig


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--design", default="simplex-lattice:3")
    p.add_argument("--seeds", default="2")
    p.add_argument("--max-steps", default="300")
    p.add_argument("--rungs", default="75,150,300")
    p.add_argument("--eval-limit", default="200")
    p.add_argument("--slots", default="2")
    p.add_argument("--out", default=None)
    p.add_argument("--analyse-only", action="store_true", help="recompute the figures of an existing --out folder")
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="cmba-search-"))
    common = ["--model", "demo", "--dataset", "synthetic:shapes", "--design", args.design, "--seeds", args.seeds,
              "--budget-rank", "8", "--max-steps", args.max_steps, "--batch-size", "16", "--lr", "5e-3",
              "--eval-limit", args.eval_limit, "--no-reference", "--no-worker", "--gpus-per-job", "0", "--json"]
    figures = {"machine": f"{platform.node()} {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at start",
               "python": platform.python_version(), "args": vars(args), "folder": str(out)}
    for name, extra in (("search", ["--search", "halving", "--rungs", args.rungs, "--report-split", "test"]),
                        ("grid", [])):
        env = {**os.environ, "CMBA_JOBS_DIR": str(out / name / "jobs"), "CMBA_ADAPTERS_DIR": str(out / name / "adapters")}
        wall = None
        if not args.analyse_only:
            json.loads(sh("sweep", *common, *extra, env=env))
            t0 = time.time()
            subprocess.run([sys.executable, "-m", "toolkit", "worker", "--slots", args.slots, "--threads", "1", "--once"],
                           cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=open(out / f"{name}.log", "w"))
            wall = round(time.time() - t0, 1)
        figures[name] = {"wall_s": wall, **figures_of(out / name, name, args)}
        print(json.dumps({name: figures[name]}, indent=1), flush=True)
    s, g = figures["search"]["span_s"], figures["grid"]["span_s"]
    figures["search_over_grid_time"] = round(s / g, 3)
    print(json.dumps(figures, indent=1))
    (out / "figures.json").write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
