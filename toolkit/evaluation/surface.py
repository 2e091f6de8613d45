"""The response surface over the ratio's proportions: Scheffé's mixture polynomials, their least-squares fit,
the simplex grids the optimum is searched on, rounding to a simple ratio, and the study's points from the
adapter store. What the study concludes from them (and how sure it is) is toolkit.evaluation.recommendation.

    >>> fit = fit_surface(points)                       # points: Point(proportions, accuracy, seed, block, questions)
    >>> fit.predict([(1/3, 1/3, 1/3)])
    >>> simple_ratio((0.286, 0.571, 0.143))            # (2, 4, 1)
    >>> points, info = points_from_rows(compare.scan().rows)

Model: Scheffé's quadratic mixture polynomial y = Σ b_i x_i + Σ_{i<j} b_ij x_i x_j over the proportions x of
vision, projector and language (no intercept: Σ x = 1); `fit_surface` is the plain least-squares fit with one
additive offset per block, kept for inspection. The recommendation fits its own weighted model of cell means
(one scale and offset per halving rung) and never pools rungs additively.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from toolkit.evaluation.verdict import fingerprint

GRID = 60
MAX_SIMPLE = 8
"""largest whole number of a simple ratio (2:4:1 rather than 0.29:0.57:0.14)"""
SIMPLE_TOLERANCE = 0.03
"""a simple ratio within this distance (in proportions) of the optimum is preferred to a closer complex one (at
0.05 the rounding alone moved a well-located optimum 0.1 from the truth: 0.25:0.57:0.18 became 2:5:2)"""
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


def region_grid(points: list[Point], n: int = GRID) -> np.ndarray:
    """The grid points inside the observed range of each proportion (no extrapolation beyond the design)."""
    grid = simplex_grid(n)
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


def label(x) -> str:
    return ":".join(map(str, simple_ratio(x, max_int=12, tolerance=1e-6)))


def points_from_rows(rows: list[dict], *, eval_tag: str | None = None,
                     predictions=None) -> tuple[list[Point], dict]:
    """The study's points from compare.scan rows: one eval set (the most common, or `eval_tag`) and the runs
    whose settings agree on everything but seed, ratio and steps (the largest such group); block = steps.
    `predictions(row) -> {qid: acc} | None` supplies per-question scores. Returns (points, {"eval_tag",
    "fingerprint", "rows": the rows the points come from})."""
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
    return points, {"eval_tag": eval_tag, "fingerprint": fp, "rows": groups[fp]}
