"""Calibration of the study's recommendation on simulated studies with a known truth (toolkit.evaluation.calibration):
false recommendation claims in null studies, and, for a planted concave optimum at 2:4:1 (+3 points over 1:1:1),
how often the named ratio is within 0.1 of it and how often the gain interval covers its true gain; plain designed
studies and halving searches whose arm differences grow, stay or shrink. Run from the project root:

    .venv/bin/python bench/bench_recommendation.py                 # the grid of bench/RESULTS.md (~25 min)
    .venv/bin/python bench/bench_recommendation.py --studies 50    # a quicker look
    .venv/bin/python bench/bench_recommendation.py --before OLD.py # the same grid for an earlier surface.py
                                                                   # (git show ecbadb9:toolkit/evaluation/surface.py)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolkit.evaluation.calibration import Scenario, rates  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=200)
    p.add_argument("--before", help="an earlier surface.py whose recommend_points to measure instead")
    args = p.parse_args()
    if args.before:
        import importlib.util

        import toolkit.evaluation.calibration as cal

        spec = importlib.util.spec_from_file_location("old_surface", args.before)
        old = importlib.util.module_from_spec(spec)
        sys.modules["old_surface"] = old
        spec.loader.exec_module(old)

        class Old:  # the earlier Recommendation read as today's: "use" = "confirmation not needed"
            def __init__(self, rec):
                self.gain, self.gain_ci, self.ratio, self.best = rec.gain, rec.gain_ci, rec.ratio, rec.ratio
                self.outcome = "candidate" if rec.confirm else "use"

        def recommend_points(points, clusters=None, n_boot=200, seed=0):
            pts = [old.Point(p.proportions, p.accuracy, p.seed, p.block, p.questions) for p in points]
            return Old(old.recommend_points(pts, n_boot=200, seed=seed))

        cal.recommend_points = recommend_points
    print("| scenario | seeds | run SD | questions | studies | false claim | located ≤0.1 | gain CI covers | mean gain | use / candidate / none |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    grid = []
    for design in ("simplex-lattice:3", "simplex-centroid"):
        for seeds in (2, 3):
            for sd in (1.0, 1.5):
                for q in (1000, 5000):
                    grid.append((f"null {design}", Scenario(design=design, seeds=seeds, seed_sd=sd, questions=q)))
    for seeds in (2, 3):
        grid.append(("planted lattice:3", Scenario(seeds=seeds, planted=3.0)))
    for trend in ("grow", "stay", "shrink"):
        grid.append((f"planted lattice:3, halving ({trend})", Scenario(planted=3.0, rungs=(75, 150, 300), trend=trend)))
        grid.append((f"null lattice:3, halving ({trend})", Scenario(rungs=(75, 150, 300), trend=trend)))
    grid.append(("null lattice:3, 5 questions per image", Scenario(per_image=5, image_sd=1.0)))
    t0 = time.time()
    for name, sim in grid:
        r = rates(sim, studies=args.studies)
        o = r["outcomes"]
        print(f"| {name} | {sim.seeds} | {sim.seed_sd:g} | {sim.questions} | {r['studies']} | {100 * r['false_claim']:.1f} % "
              f"| {100 * r['located']:.1f} % | {100 * r['covered']:.1f} % | {r['mean_gain']:+.2f} | "
              f"{o['use']} / {o['candidate']} / {o['none']} |", flush=True)
    print(f"\n{time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
