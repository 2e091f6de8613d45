"""The study's recommendation: a mixture-model response surface over the ratio's proportions, its optimum with a
bootstrap confidence region, rounded to a simple ratio, and its predicted gain over uniform.

    >>> rec = recommend(compare.scan().rows)            # None when the store holds no designed study
    >>> rec.ratio, rec.gain, rec.gain_ci, rec.confirm   # "2:4:1", +1.8, (0.4, 3.1), (True, "why")
    >>> fit = fit_surface(points)                       # points: Point(proportions, accuracy, seed, block, questions)
    >>> fit.predict([(1/3, 1/3, 1/3)])

Model: Scheffé's quadratic mixture polynomial y = Σ b_i x_i + Σ_{i<j} b_ij x_i x_j over the proportions x of
vision, projector and language (no intercept: Σ x = 1), fitted by least squares to every run's accuracy, seeds
as replicates. In a successive-halving search the surface is fitted to the longest rung when at least 6 ratios
reached it (the differences between arms shrink with training, so earlier rungs would distort it); with fewer,
every rung enters as a block with its own additive offset, and predictions are for the longest rung. With fewer than 6 distinct points the linear Scheffé model (3 terms) is
fitted instead. The optimum is the best point of a 1/60 grid inside the observed range of each proportion (no
extrapolation beyond the design). Uncertainty: B bootstrap refits, each resampling seeds within every
(arm, rung) and the evaluation questions (the same resample for every run, so paired), the question-level
part only where predictions.jsonl exist; the optimum's 95 % region is the 95 % of bootstrap optima nearest
the estimate, and the gain of the rounded ratio over 1:1:1 gets a percentile interval. A confirmation run is
needed unless the rounded ratio was itself trained at the longest rung with >= 2 seeds and its gain's lower
bound clears the study's +1 point (toolkit.evaluation.verdict.MIN_EFFECT).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from toolkit.evaluation.verdict import MIN_EFFECT, fingerprint

GRID = 60
N_BOOT = 200
BOOT_SEED = 0
MAX_SIMPLE = 8
"""largest whole number of a simple ratio (2:4:1 rather than 0.29:0.57:0.14)"""
SIMPLE_TOLERANCE = 0.05
"""a simple ratio within this distance (in proportions) of the optimum is preferred to a closer complex one"""
UNIFORM = (1 / 3, 1 / 3, 1 / 3)


@dataclass(frozen=True)
class Point:
    """One evaluated run: its ratio as proportions, its accuracy (%), seed, block (steps) and per-question scores."""

    proportions: tuple[float, float, float]
    accuracy: float
    seed: object = 0
    block: int = 0
    questions: dict[str, float] | None = None
    """question id -> accuracy in [0, 1], for the question-level bootstrap"""


def terms(x: np.ndarray, quadratic: bool = True) -> np.ndarray:
    """Scheffé terms of proportions x (n, 3) -> (n, 3) or (n, 6): x1, x2, x3[, x1x2, x1x3, x2x3]."""
    x = np.asarray(x, dtype=float).reshape(-1, 3)
    if not quadratic:
        return x
    return np.column_stack([x, x[:, 0] * x[:, 1], x[:, 0] * x[:, 2], x[:, 1] * x[:, 2]])


def simplex_grid(n: int = GRID) -> np.ndarray:
    """Every point of the simplex whose proportions are multiples of 1/n: (C(n+2, 2), 3)."""
    return np.array([(i / n, j / n, (n - i - j) / n) for i in range(n + 1) for j in range(n + 1 - i)])


@dataclass
class Fit:
    coef: np.ndarray
    quadratic: bool
    blocks: list[int]
    """block values, the last (longest) is the one predictions are for"""
    block_offsets: dict[int, float]
    r2: float
    n: int

    def predict(self, x) -> np.ndarray:
        return terms(x, self.quadratic) @ self.coef[: 6 if self.quadratic else 3]


def _fit(x: np.ndarray, y: np.ndarray, blocks: np.ndarray, quadratic: bool) -> Fit:
    levels = sorted(set(blocks.tolist()))
    ref = levels[-1]
    cols = [terms(x, quadratic)] + [(blocks == b).astype(float)[:, None] for b in levels if b != ref]
    design = np.hstack(cols)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    total = float(np.sum((y - y.mean()) ** 2))
    k = 6 if quadratic else 3
    offsets = {b: float(coef[k + i]) for i, b in enumerate(b for b in levels if b != ref)}
    offsets[ref] = 0.0
    return Fit(coef=coef, quadratic=quadratic, blocks=levels, block_offsets=offsets,
               r2=1 - float(np.sum(resid ** 2)) / total if total > 0 else 1.0, n=len(y))


def fit_surface(points: list[Point]) -> Fit:
    """Least-squares Scheffé fit (quadratic from 6 distinct proportions, else linear) with a block offset per
    rung. ValueError with fewer than 3 distinct proportions."""
    x = np.array([p.proportions for p in points], dtype=float)
    distinct = {tuple(np.round(r, 6)) for r in x}
    if len(distinct) < 3:
        raise ValueError(f"a response surface needs at least 3 distinct ratios, got {len(distinct)}")
    y = np.array([p.accuracy for p in points], dtype=float)
    blocks = np.array([p.block for p in points])
    return _fit(x, y, blocks, quadratic=len(distinct) >= 6)


def _region_grid(points: list[Point]) -> np.ndarray:
    grid = simplex_grid()
    x = np.array([p.proportions for p in points])
    lo, hi = x.min(axis=0) - 1e-9, x.max(axis=0) + 1e-9
    inside = np.all((grid >= lo) & (grid <= hi), axis=1)
    return grid[inside] if inside.any() else grid


def simple_ratio(x, *, max_int: int = MAX_SIMPLE, tolerance: float = SIMPLE_TOLERANCE) -> tuple[int, int, int]:
    """The simplest whole-number ratio near proportions x: the smallest sum within `tolerance`, else the nearest.

    >>> simple_ratio((0.286, 0.571, 0.143))
    (2, 4, 1)
    """
    x = np.asarray(x, dtype=float) / np.sum(x)
    best, best_key = None, None
    for a in range(max_int + 1):
        for b in range(max_int + 1):
            for c in range(max_int + 1):
                if a + b + c == 0 or math.gcd(a, b, c) != 1:
                    continue
                dist = float(np.linalg.norm(np.array([a, b, c]) / (a + b + c) - x))
                key = (dist > tolerance, a + b + c if dist <= tolerance else 0, dist)
                if best_key is None or key < best_key:
                    best, best_key = (a, b, c), key
    return best


@dataclass
class Recommendation:
    ratio: str
    """the optimum rounded to a simple ratio, e.g. '2:4:1'"""
    optimum: tuple[float, float, float]
    """the fitted optimum's proportions (vision, projector, language)"""
    region: list[tuple[float, float, float]]
    """the 95 % bootstrap confidence region of the optimum (points)"""
    proportion_ci: dict[str, tuple[float, float]]
    predicted: float
    """predicted accuracy (%) of `ratio` at the longest rung"""
    uniform: float
    gain: float
    """accuracy of `ratio` minus that of 1:1:1 (points): measured (means over seeds at the longest rung) when both
    ran it with >= 2 seeds, else predicted by the surface"""
    gain_ci: tuple[float, float]
    confirm: bool
    confirm_reason: str
    model: str
    r2: float
    n_runs: int
    n_ratios: int
    blocks: list[int]
    n_boot: int
    gain_source: str = "surface"
    """measured | surface: where `gain` and its interval come from"""
    lack_of_fit: float = 0.0
    """the largest |observed mean - fitted| over the arms of the longest rung (points): a large value says the
    quadratic misses the shape (e.g. a cliff at an edge) and its predictions away from the arms are doubtful"""
    surface: list[dict] = field(default_factory=list)
    """{vision, projector, language, accuracy} on a coarse grid, for the ternary plot"""
    observed: list[dict] = field(default_factory=list)
    """{ratio, vision, projector, language, accuracy, seeds, block}: mean of each observed arm per block"""

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _resample(points: list[Point], rng: np.random.Generator, qids: list[str] | None,
              per_question: dict[int, np.ndarray]) -> list[Point]:
    """One bootstrap sample: seeds resampled within each arm and block, questions resampled across all
    (`per_question`: id(point) -> its scores in `qids` order, built once for every round)."""
    groups: dict[tuple, list[Point]] = {}
    for p in points:
        groups.setdefault((tuple(np.round(p.proportions, 6)), p.block), []).append(p)
    pick = None if not qids else rng.integers(0, len(qids), len(qids))
    out = []
    for members in groups.values():
        for i in rng.integers(0, len(members), len(members)):
            p = members[i]
            acc = p.accuracy
            if pick is not None and p.questions:
                acc = 100.0 * float(np.mean(per_question[id(p)][pick]))
            out.append(Point(p.proportions, acc, p.seed, p.block))
    return out


def study_points(points: list[Point]) -> list[Point]:
    """The points the surface is fitted to: the longest rung alone when it has the 6 distinct ratios a quadratic
    needs (arm differences shrink with training, so early rungs would distort the final surface), else every
    rung with its offset."""
    longest = max(p.block for p in points)
    final = [p for p in points if p.block == longest]
    return final if len({p.proportions for p in final}) >= 6 else points


def recommend_points(points: list[Point], *, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> Recommendation:
    """Fit, locate the optimum, bootstrap it and round it (ValueError with fewer than 3 distinct ratios)."""
    points = study_points(points)
    fit = fit_surface(points)
    grid = _region_grid(points)
    opt = grid[int(np.argmax(fit.predict(grid)))]
    ratio = simple_ratio(opt)
    rx = np.array(ratio, dtype=float) / sum(ratio)
    with_q = [p.questions for p in points if p.questions]
    qids = sorted(set.intersection(*(set(q) for q in with_q))) if len(with_q) == len(points) and with_q else None
    longest = max(p.block for p in points)

    def at(pts, x):  # runs of ratio x at the longest rung
        return [p for p in pts if p.block == longest and np.allclose(p.proportions, x, atol=1e-6)]

    trained, base = at(points, rx), at(points, UNIFORM)
    observed_gain = len(trained) >= 2 and len(base) >= 2  # where the data exist, the gain is measured, not modelled

    def gain_of(pts, f):
        if observed_gain:
            return float(np.mean([p.accuracy for p in at(pts, rx)]) - np.mean([p.accuracy for p in at(pts, UNIFORM)]))
        return float(f.predict([rx])[0] - f.predict([UNIFORM])[0])

    per_question = {id(p): np.array([p.questions.get(q, 0.0) for q in qids]) for p in points if p.questions} \
        if qids else {}
    rng = np.random.default_rng(seed)
    optima, gains = [], []
    for _ in range(n_boot):
        sample = _resample(points, rng, qids, per_question)
        b = fit_surface(sample)
        optima.append(grid[int(np.argmax(b.predict(grid)))])
        gains.append(gain_of(sample, b))
    optima = np.array(optima)
    dist = np.linalg.norm(optima - opt, axis=1)
    region = optima[dist <= np.quantile(dist, 0.95)]
    gain = gain_of(points, fit)
    gain_ci = (float(np.quantile(gains, 0.025)), float(np.quantile(gains, 0.975)))
    if observed_gain and gain_ci[0] > MIN_EFFECT:
        confirm, why = False, (f"{len(trained)} seeds of {':'.join(map(str, ratio))} ran the full schedule and the "
                               f"measured gain's lower bound {gain_ci[0]:+.2f} clears +{MIN_EFFECT:g}")
    elif not trained:
        confirm, why = True, f"{':'.join(map(str, ratio))} is a fitted optimum no run trained with the full schedule"
    else:
        confirm, why = True, (f"the {'measured' if observed_gain else 'predicted'} gain's 95% interval "
                              f"[{gain_ci[0]:+.2f}, {gain_ci[1]:+.2f}] does not clear +{MIN_EFFECT:g} point")
    coarse = simplex_grid(20)
    observed: dict[tuple, list[Point]] = {}
    for p in points:
        observed.setdefault((tuple(np.round(p.proportions, 6)), p.block), []).append(p)
    names = ("vision", "projector", "language")
    return Recommendation(
        ratio=":".join(map(str, ratio)), optimum=tuple(float(v) for v in opt),
        region=[tuple(float(v) for v in r) for r in region],
        proportion_ci={c: (float(np.quantile(optima[:, i], 0.025)), float(np.quantile(optima[:, i], 0.975)))
                       for i, c in enumerate(names)},
        predicted=float(fit.predict([rx])[0]), uniform=float(fit.predict([UNIFORM])[0]), gain=gain,
        gain_ci=gain_ci, confirm=confirm, confirm_reason=why,
        model=f"Scheffé {'quadratic' if fit.quadratic else 'linear'}" + (f" + {len(fit.blocks)} rung offsets"
                                                                          if len(fit.blocks) > 1 else ""),
        r2=fit.r2, n_runs=len(points), n_ratios=len({k[0] for k in observed}), blocks=fit.blocks, n_boot=n_boot,
        gain_source="measured" if observed_gain else "surface",
        lack_of_fit=max(abs(float(np.mean([p.accuracy for p in m])) - float(fit.predict([k[0]])[0])
                            - fit.block_offsets.get(k[1], 0.0)) for k, m in observed.items()),
        surface=[{**dict(zip(names, map(float, g))), "accuracy": float(a)} for g, a in zip(coarse, fit.predict(coarse))],
        observed=[{"ratio": _label(k[0]), **dict(zip(names, k[0])), "block": k[1], "seeds": len(m),
                   "accuracy": float(np.mean([p.accuracy for p in m]))} for k, m in sorted(observed.items())])


def _label(x) -> str:
    return ":".join(map(str, simple_ratio(x, max_int=12, tolerance=1e-6)))


def points_from_rows(rows: list[dict], *, eval_tag: str | None = None,
                     predictions=None) -> tuple[list[Point], dict]:
    """The study's points from compare.scan rows: one eval set (the most common, or `eval_tag`) and the runs
    whose settings agree on everything but seed, ratio and steps (the largest such group); block = steps.
    `predictions(row) -> {qid: acc} | None` supplies per-question scores. Returns (points, {"eval_tag",
    "fingerprint"})."""
    adapters = [r for r in rows if r["kind"] != "base" and r.get("ratio_values")]
    if eval_tag is None and adapters:
        tags = [r["eval_tag"] for r in adapters]
        eval_tag = max(sorted(set(tags)), key=tags.count)
    adapters = [r for r in adapters if r["eval_tag"] == eval_tag]
    groups: dict[str, list[dict]] = {}
    for r in adapters:
        s = {k: v for k, v in (r.get("settings") or {}).items() if k != "training.max_steps"}
        groups.setdefault(fingerprint(s), []).append(r)
    if not groups:
        return [], {"eval_tag": eval_tag, "fingerprint": None}
    fp = max(sorted(groups), key=lambda k: len(groups[k]))
    points = []
    for r in groups[fp]:
        w = np.array([float(v) for v in r["ratio_values"]])
        points.append(Point(tuple(w / w.sum()), float(r["accuracy"]), r.get("seed"),
                            int((r.get("settings") or {}).get("training.max_steps") or 0),
                            predictions(r) if predictions else None))
    return points, {"eval_tag": eval_tag, "fingerprint": fp}


def recommend(rows: list[dict], *, eval_tag: str | None = None, n_boot: int = N_BOOT,
              seed: int = BOOT_SEED) -> Recommendation | None:
    """The recommendation from a store's rows, or None when fewer than 3 distinct ratios were evaluated."""
    from toolkit.evaluation.compare import _per_question

    points, _ = points_from_rows(rows, eval_tag=eval_tag, predictions=_per_question)
    if len({p.proportions for p in points}) < 3:
        return None
    return recommend_points(points, n_boot=n_boot, seed=seed)
