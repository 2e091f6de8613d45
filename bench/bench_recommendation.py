"""Calibration of the study's recommendation on simulated studies with a known truth (toolkit.evaluation.calibration):
false recommendation claims in null studies, and, for a planted concave optimum at 2:4:1 (+3 points over 1:1:1),
how often the named ratio is within 0.1 of it and how often the gain interval covers its true gain; plain designed
studies and halving searches whose arm differences grow, stay or shrink. Run from the project root:

    .venv/bin/python bench/bench_recommendation.py                 # the grid of bench/RESULTS.md (~25 min)
    .venv/bin/python bench/bench_recommendation.py --studies 50    # a quicker look
    .venv/bin/python bench/bench_recommendation.py --clustering    # only the image-clustering widths
    .venv/bin/python bench/bench_recommendation.py --before OLD.py # the same grid for an earlier surface.py
                                                                   # (git show ecbadb9:toolkit/evaluation/surface.py)
"""

from __future__ import annotations

import argparse
import sys
import time

from toolkit.evaluation.calibration import Scenario, rates


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=200)
    p.add_argument("--before", help="an earlier surface.py whose recommend_points to measure instead")
    p.add_argument("--only", help="run only the scenarios whose name contains this text (e.g. planted)")
    p.add_argument("--clustering", action="store_true", help="only how much wider image clustering makes the intervals")
    args = p.parse_args()
    if args.clustering:
        clustering()
        return 0
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
        if args.only and args.only not in name:
            continue
        r = rates(sim, studies=args.studies)
        o = r["outcomes"]
        print(f"| {name} | {sim.seeds} | {sim.seed_sd:g} | {sim.questions} | {r['studies']} | {100 * r['false_claim']:.1f} % "
              f"| {100 * r['located']:.1f} % | {100 * r['covered']:.1f} % | {r['mean_gain']:+.2f} | "
              f"{o['use']} / {o['candidate']} / {o['none']} |", flush=True)
    print(f"\n{time.time() - t0:.0f} s", file=sys.stderr)
    clustering()
    return 0


def clustering(questions: int = 5000, per_image: float = 5.3, seeds: int = 3, reps: int = 20) -> None:
    """How much wider the verdict's interval gets when questions are resampled by image, on a VQAv2-like layout
    (5.3 questions per image, as in VQAv2's validation split: 214,354 questions on 40,504 images): two ratios whose
    difference varies by image (sd `arm_image`) and by question, 3 seeds, the two-level bootstrap with and without
    the image clusters, averaged over `reps` simulated comparisons."""
    import numpy as np
    from scipy import stats

    from toolkit.evaluation.stats import two_level_bootstrap

    print("\n| arm × image sd | arm × question sd | CI width, questions resampled | CI width, images resampled | ratio |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for arm_image, arm_q in ((0.0, 0.3), (0.2, 0.2), (0.3, 0.1), (0.5, 0.1)):
        widths = []
        for _ in range(reps):
            images = np.minimum((np.arange(questions) / per_image).astype(int), questions)
            n_img = images.max() + 1
            base = rng.normal(0, 1, questions) + rng.normal(0, 0.7, n_img)[images]
            arms = []
            for _arm in range(2):
                shift = rng.normal(0, arm_image, n_img)[images] + rng.normal(0, arm_q, questions)
                runs = [(base + shift + rng.normal(0, 0.25, questions) < stats.norm.ppf(0.6) * 1.3).astype(float)
                        for _ in range(seeds)]
                arms.append(100 * np.array(runs))
            plain = two_level_bootstrap(ratio=arms[0], baseline=arms[1], n_boot=2000)
            clustered = two_level_bootstrap(ratio=arms[0], baseline=arms[1], clusters=images.tolist(), n_boot=2000)
            widths.append((plain.ci_high - plain.ci_low, clustered.ci_high - clustered.ci_low))
        w = np.mean(widths, axis=0)
        print(f"| {arm_image} | {arm_q} | {w[0]:.2f} | {w[1]:.2f} | {w[1] / w[0]:.2f}x |", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
