"""Simulated studies with a known truth, to calibrate the recommendation (tests/evaluation and
bench/bench_recommendation.py): null studies (no ratio differs) and a planted concave optimum, as a plain designed
study or a successive-halving search whose arm differences grow, stay or shrink with training.

    >>> sim = Scenario(design="simplex-lattice:3", seeds=2, seed_sd=1.0, questions=1000, planted=3.0)
    >>> points, clusters, truth = simulate(sim, np.random.default_rng(0))
    >>> rates(sim, studies=200)                          # {"false_claim", "located", "covered", ...}

A run's accuracy is the truth at its ratio plus a run effect (the seed: N(0, seed_sd), kept over the rungs of a
search) plus question sampling: each question has a difficulty shared by every run (so the question-level noise
is paired, as in a real study), questions come `per_image` to an image with a shared image effect, and each
answer is right when the question's difficulty plus a little noise of the run's own is below the run's threshold
(two seeds mostly agree on a question, as real models do).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _sp

from toolkit.evaluation.recommendation import recommend_points
from toolkit.evaluation.surface import UNIFORM, Point

PLANTED_AT = (2 / 7, 4 / 7, 1 / 7)
RUN_NOISE = 0.25
"""a run's own noise on a question's difficulty: two seeds mostly agree on a question, as real models do"""
BASE = 60.0


def design_points(design: str) -> list[tuple[float, float, float]]:
    """Proportions of simplex-lattice:M or simplex-centroid (1:1:1 always in)."""
    if design.startswith("simplex-lattice:"):
        m = int(design.split(":")[1])
        pts = [(i / m, j / m, (m - i - j) / m) for i in range(m + 1) for j in range(m + 1 - i)]
    elif design == "simplex-centroid":
        pts = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (.5, .5, 0), (.5, 0, .5), (0, .5, .5)]
    else:
        raise ValueError(f"design: simplex-lattice:M or simplex-centroid, got '{design}'")
    pts = [tuple(float(v) for v in p) for p in pts]
    if not any(np.allclose(p, UNIFORM) for p in pts):
        pts.append(UNIFORM)
    return pts


@dataclass(frozen=True)
class Scenario:
    design: str = "simplex-lattice:3"
    seeds: int = 2
    seed_sd: float = 1.0
    questions: int = 1000
    planted: float = 0.0
    """gain of the optimum PLANTED_AT over 1:1:1 (points); 0: a null study"""
    per_image: int = 1
    image_sd: float = 0.0
    rungs: tuple[int, ...] = ()
    """a halving search's rungs (steps); empty: every arm trains fully"""
    trend: str = "stay"
    """grow | stay | shrink: how arm differences change from the first rung to the last"""


FLAT = 20.0
"""curvature (points per squared unit of proportion) across the direction from 1:1:1 to the optimum"""


def truth(x, planted: float) -> float:
    """The last rung's accuracy: a concave quadratic, planted points above 1:1:1 at PLANTED_AT, steep along the
    line from 1:1:1 to the optimum and gentle across it (so the corners stay 20-40 points below, not at 0)."""
    x, star, u = np.asarray(x, dtype=float) - np.asarray(PLANTED_AT), np.asarray(PLANTED_AT), np.asarray(UNIFORM)
    v = u - star
    along = float(x @ v) / float(v @ v)
    across = x - along * v
    return BASE + planted * (1.0 - along ** 2) - (FLAT * float(across @ across) if planted else 0.0)


def _scale(rung: int, n: int, trend: str) -> float:
    if n == 1 or trend == "stay":
        return 1.0
    frac = rung / (n - 1)
    return {"grow": 0.5 + 0.5 * frac, "shrink": 1.5 - 0.5 * frac}[trend]


def simulate(sim: Scenario, rng: np.random.Generator) -> tuple[list[Point], dict, callable]:
    """(points, {question id: image id}, truth at the last rung) of one simulated study."""
    q = sim.questions
    images = np.arange(q) // max(1, sim.per_image)
    difficulty = rng.normal(0, 1.0, q) + rng.normal(0, sim.image_sd, images.max() + 1)[images]
    qids = [str(i) for i in range(q)]
    clusters = {qid: f"img{images[i]}" for i, qid in enumerate(qids)}
    arms = design_points(sim.design)
    run_effect = {(a, s): rng.normal(0, sim.seed_sd) for a in arms for s in range(sim.seeds)}
    rungs = sim.rungs or (1,)
    alive = list(arms)
    points = []
    for k, steps in enumerate(rungs):
        scale, offset = _scale(k, len(rungs), sim.trend), -3.0 * (len(rungs) - 1 - k)
        means = {}
        for a in alive:
            accs = []
            for s in range(sim.seeds):
                target = BASE + offset + scale * (truth(a, sim.planted) - BASE) + run_effect[(a, s)]
                # a question is answered when its difficulty (shared by every run, plus a little noise of this
                # run's own) is below the threshold that gives the target accuracy
                spread = math.sqrt(1.0 + sim.image_sd ** 2 + RUN_NOISE ** 2)
                threshold = spread * float(_sp.norm.ppf(min(max(target / 100.0, 1e-4), 1 - 1e-4)))
                scores = (difficulty + rng.normal(0, RUN_NOISE, q) < threshold).astype(float)
                points.append(Point(a, 100.0 * scores.mean(), s, steps, dict(zip(qids, scores))))
                accs.append(100.0 * scores.mean())
            means[a] = float(np.mean(accs))
        if k < len(rungs) - 1:  # keep the better half; 1:1:1 always stays (the reference)
            order = sorted(alive, key=lambda a: -means[a])
            keep = set(order[:math.ceil(len(order) / 2)]) | {tuple(UNIFORM)}
            alive = [a for a in alive if a in keep or np.allclose(a, UNIFORM)]
    return points, clusters, (lambda x: truth(x, sim.planted))


def rates(sim: Scenario, *, studies: int, seed: int = 0, n_boot: int = 2000) -> dict:
    """Over `studies` simulated studies: false_claim (the gain interval excludes 0, or 'use' a non-uniform
    ratio: only meaningful for null studies), located (the named ratio within 0.1 of the planted optimum),
    covered (the gain interval holds the true gain of the named ratio), and the outcome counts."""
    rng = np.random.default_rng(seed)
    claims = located = covered = named = 0
    gains, outcomes = [], {"use": 0, "candidate": 0, "none": 0}
    for _ in range(studies):
        points, clusters, f = simulate(sim, rng)
        rec = recommend_points(points, clusters=clusters if sim.per_image > 1 else None, n_boot=n_boot,
                               seed=int(rng.integers(1 << 30)))
        outcomes[rec.outcome] += 1
        lo, hi = rec.gain_ci
        claims += (lo > 0) or (rec.outcome == "use" and rec.ratio != "1:1:1")
        name = rec.ratio or rec.best
        if name is not None:
            w = np.array([float(v) for v in name.split(":")])
            x = w / w.sum()
            named += 1
            located += float(np.linalg.norm(x - np.array(PLANTED_AT))) <= 0.1
        x = np.array([float(v) for v in (name or "1:1:1").split(":")])
        x = x / x.sum()
        true_gain = f(x) - f(UNIFORM)
        covered += lo <= true_gain <= hi
        gains.append(rec.gain)
    return {"studies": studies, "false_claim": claims / studies, "located": located / studies,
            "covered": covered / studies, "mean_gain": float(np.mean(gains)), "outcomes": outcomes}
