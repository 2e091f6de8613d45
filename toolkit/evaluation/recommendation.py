"""The study's answer: which ratio to use, with an interval that accounts for having chosen it on the same data.

    >>> rec = recommend(compare.scan().rows)            # None when fewer than 3 ratios were evaluated
    >>> rec.outcome, rec.headline                       # "use" | "candidate" | "none", "use about 2:4:1"
    >>> rec.ratio, rec.gain, rec.gain_ci, rec.reason    # the ratio, its gain over 1:1:1 and the adjusted interval
    >>> rec.confirmation                                # the confirmation's outcome on fresh seeds, once it ran

Three outcomes, each with its reason in plain words:
- **use X:Y:Z**: X:Y:Z was trained (to the last rung), its measured gain over 1:1:1 is above the study's +1 point
  (toolkit.evaluation.verdict.MIN_EFFECT) and its *selection-adjusted* 95% interval excludes 0;
- **candidate X:Y:Z, confirm it**: the best ratio's gain is positive (measured, where it was trained) but not
  established, or X:Y:Z is a fitted optimum that no run trained (a fitted gain is a screening value); a confirmation on
  fresh seeds decides;
- **no ratio beats 1:1:1 detectably**: the best gain is not positive, or every ratio's adjusted upper bound is
  below +1 point; with the equivalence bound the data give ("every ratio is within ±d points of 1:1:1").
A ratio measured below 1:1:1 is never recommended, confirmed or called best.

Method. The data are cell means (one cell per ratio and halving rung) of the runs of one settings fingerprint.
- What is fitted depends on what the design supports. A Scheffé quadratic surface (6 terms) needs at least 7
  distinct ratios (one degree of freedom left to test its fit) and passes a lack-of-fit test (Wald, against the
  cell means' own covariance; p < 0.01 rejects it). Otherwise, e.g. a plain 4-ratio sweep or a search whose
  last rung has few arms, the candidate is the best *measured* arm and no surface is shown.
- Halving rungs are never pooled with additive offsets: the surface's shape is shared by the rungs and each
  rung has its own offset and scale (arm differences may grow or shrink with training; the last rung's scale
  is 1, so the gain is the last rung's). The gain's variance comes from the whole fit linearised by central
  differences (the scales re-estimated each time). No lack-of-fit test across rungs: the finalists were chosen
  on their own luck, so their cells deviate from any shared shape. Arms are compared at the last rung only,
  where 1:1:1 is always kept.
- Covariance of the cell means: the seed level is the run-to-run variance pooled over the ratios (each ratio's
  seeds give S-1 degrees of freedom), per rung, and between rungs for the runs a search continued (one run at
  two rungs is correlated with itself); the question level is the
  cluster-sampling covariance of the per-question cell means over images (questions on one image resampled
  together; each question its own image when none is recorded), with the run × question noise that the seed
  level already holds taken out of its diagonal.
- Selection: the interval of the chosen ratio is a simultaneous 95% band over every ratio it could have been
  chosen from (the max-|t| over the candidates, by simulation from the covariance with the seed level's
  chi-square, i.e. a multivariate t), so choosing the best of many noisy ratios does not make its interval
  optimistic. After a halving search the band is at least Bonferroni's over every arm the search started with
  (the finalists were chosen on earlier rungs of the same seeds).
- The gain reported is the measured one where the chosen ratio was trained (with the arms' own band: max-|t|
  over the last rung's arms, at least Bonferroni's over every arm after a search), else the fitted one at the
  rounded ratio with the surface's band; a fitted gain is a screening value: the confirmation's fresh-seed
  estimate is the study's final answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as _sp

from toolkit.evaluation.stats import seeds_needed, t_quantile
from toolkit.evaluation.surface import (
    UNIFORM,
    Point,
    label,
    region_grid,
    simple_ratio,
    simplex_grid,
    terms,
)
from toolkit.evaluation.verdict import ALPHA, MIN_EFFECT

OUTCOMES = ("use", "candidate", "none")
N_SIM = 4000
"""draws of the simultaneous band's critical value"""
SIM_SEED = 0
BAND_GRID = 30
"""the band covers the grid of multiples of 1/30 inside the design (plus the chosen ratio)"""
MIN_SURFACE_RATIOS = 7
"""a quadratic surface (6 terms) needs one more distinct ratio to test its fit"""
LOF_ALPHA = 0.01
LOG_SCALE_BOUND = math.log(10.0)
"""an earlier rung's scale of the shared shape stays within [1/10, 10] of the last rung's"""
"""the lack-of-fit test rejects a surface only on strong evidence (a cliff, a bend the quadratic cannot follow):
with 2 seeds its covariance is a rough estimate, and at 0.05 it rejected a correct model in ~30% of searches"""
NAMES = ("vision", "projector", "language")


@dataclass
class Recommendation:
    outcome: str
    """use | candidate | none"""
    headline: str
    """'use about 2:4:1' | 'candidate 2:4:1: confirm it' | 'no ratio beats 1:1:1 detectably'"""
    reason: str
    ratio: str | None
    """the recommended or candidate ratio; None when no ratio beats 1:1:1"""
    best: str | None
    """the best ratio measured at the last rung, when it is above 1:1:1 (else None: never call a loser best)"""
    method: str
    """surface | arms: what the design supports"""
    gain: float | None
    """gain of `ratio` over 1:1:1 at the last rung (points): fitted (surface) or measured (arms)"""
    gain_ci: tuple[float, float] | None
    """the selection-adjusted (simultaneous) 95% interval of `gain`"""
    gain_source: str
    """fitted | measured"""
    measured_gain: float | None
    """the measured gain of `ratio` when it was trained to the last rung"""
    fitted_gain: float | None
    """the surface's gain at `ratio` (a screening value; `gain` is the measured one where `ratio` was trained)"""
    equivalence: float | None
    """every candidate ratio is within ±equivalence points of 1:1:1 (simultaneous 95%)"""
    seeds_needed: int | None
    """seeds per ratio to detect +MIN_EFFECT at 80% power (pooled variances, Bonferroni over the candidates)"""
    confirm: bool
    """a confirmation on fresh seeds is worth queueing (the gain is positive)"""
    confirm_seeds: int | None
    """seeds per ratio the confirmation needs: 80% power, two-sided at 0.05, for the midpoint of `gain` and its
    adjusted lower bound (at least +MIN_EFFECT): chosen as the best, the gain is likely an overestimate"""
    confirm_reason: str
    critical: float
    """the band's multiplier: gain ± critical · se"""
    df: float
    """degrees of freedom of the seed level"""
    model: str
    r2: float | None
    lack_of_fit_p: float | None
    n_runs: int
    n_ratios: int
    n_arms: int
    """every ratio the study trained (at any rung): the candidates the choice was made among"""
    blocks: list[int]
    n_boot: int
    """draws of the band's critical value (the name is kept for readers of earlier versions)"""
    optimum: tuple[float, float, float] | None = None
    """the fitted optimum's proportions (surface only)"""
    region: list[tuple[float, float, float]] = field(default_factory=list)
    """grid points whose fitted gain is within the band of the optimum's (surface only)"""
    proportion_ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    predicted: float | None = None
    """fitted accuracy (%) of `ratio` at the last rung (surface only)"""
    uniform: float | None = None
    """accuracy (%) of 1:1:1 at the last rung: fitted (surface) or measured (arms)"""
    lack_of_fit: float = 0.0
    """the largest |observed mean - fitted| over the cells (points; surface only)"""
    arms: list[dict] = field(default_factory=list)
    """{ratio, accuracy, seeds, gain, ci}: each last-rung arm against 1:1:1, with the adjusted interval"""
    surface: list[dict] = field(default_factory=list)
    """{vision, projector, language, accuracy} on a coarse grid, for the ternary plot (surface only)"""
    observed: list[dict] = field(default_factory=list)
    """{ratio, vision, projector, language, accuracy, seeds, block}: mean of each observed cell"""
    confirmation: dict | None = None
    """the confirmation's outcome (`confirmation_outcome`), once one is found"""

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome: must be one of {', '.join(OUTCOMES)}, got {self.outcome!r}")

    @property
    def final(self) -> str:
        """The study's answer in one line: the confirmation's when it ran, else the recommendation's."""
        if self.confirmation and self.confirmation.get("state") in ("confirmed", "not confirmed"):
            return self.confirmation["text"]
        if self.confirmation and self.confirmation.get("state") == "pending":
            return f"candidate {self.ratio}: {self.confirmation['text']}"
        return self.headline

    def to_dict(self) -> dict:
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__}, "final": self.final}


# ------------------------------------------------------------------------------------------ cells


@dataclass
class _Cells:
    keys: list[tuple]
    """(proportions, block) per cell"""
    means: np.ndarray
    sizes: np.ndarray
    cov_seed: np.ndarray
    cov_q: np.ndarray
    df_seed: float
    """degrees of freedom of the last rung's run-to-run variance"""
    df_fit: float
    """degrees of freedom of the run-to-run variances over every rung (what the lack-of-fit test reads)"""
    df_q: float
    runs: int
    pooled_seed_var: float | None
    """pooled within-cell variance of one run at the last rung (points²)"""


def _key(x) -> tuple:
    return tuple(round(float(v), 6) for v in x)


def _psd(m: np.ndarray) -> np.ndarray:
    m = (m + m.T) / 2
    w, v = np.linalg.eigh(m)
    return (v * np.clip(w, 0, None)) @ v.T


def _cells(points: list[Point], clusters: dict | None) -> _Cells:
    by_cell: dict[tuple, list[Point]] = {}
    for p in points:
        by_cell.setdefault((_key(p.proportions), p.block), []).append(p)
    keys = sorted(by_cell, key=lambda k: (k[1], k[0]))
    means = np.array([np.mean([p.accuracy for p in by_cell[k]]) for k in keys])
    sizes = np.array([len(by_cell[k]) for k in keys], dtype=float)
    n = len(keys)
    # seed level: the run-to-run (co)variance pooled over the ratios, per rung and between rungs (a run continued
    # over several rungs is one run); a cell's mean has variance sigma2_k / S, cells of one ratio at two rungs
    # covary through the runs they share
    blocks = sorted({k[1] for k in keys})
    b_index = {b: i for i, b in enumerate(blocks)}
    runs: dict[tuple, dict[int, float]] = {}
    for p in points:
        runs.setdefault((_key(p.proportions), str(p.seed)), {})[p.block] = p.accuracy
    nb = len(blocks)
    cross, dof = np.zeros((nb, nb)), np.zeros((nb, nb))
    by_arm: dict[tuple, list[dict]] = {}
    for (arm, _), traj in runs.items():
        by_arm.setdefault(arm, []).append(traj)
    for trajs in by_arm.values():
        for i, bi in enumerate(blocks):
            for j, bj in enumerate(blocks):
                both = [t for t in trajs if bi in t and bj in t]
                if len(both) < 2:
                    continue
                ei = np.array([t[bi] for t in both]) - np.mean([t[bi] for t in both])
                ej = np.array([t[bj] for t in both]) - np.mean([t[bj] for t in both])
                cross[i, j] += float(ei @ ej)
                dof[i, j] += len(both) - 1
    sigma = np.divide(cross, dof, out=np.zeros_like(cross), where=dof > 0)
    cov_seed = np.zeros((n, n))
    for c, (arm_c, b_c) in enumerate(keys):
        for d, (arm_d, b_d) in enumerate(keys):
            if arm_c != arm_d:
                continue
            shared = sum(1 for t in by_arm[arm_c] if b_c in t and b_d in t)
            cov_seed[c, d] = sigma[b_index[b_c], b_index[b_d]] * shared / (sizes[c] * sizes[d])
    cov_seed = _psd(cov_seed)
    df_seed = float(dof[-1, -1])
    pooled = float(sigma[-1, -1]) if dof[-1, -1] > 0 else None
    # question level: cluster sampling of the per-question cell means, over images
    cov_q, df_q = np.zeros((n, n)), math.inf
    if all(p.questions for p in points):
        qids = sorted(set.intersection(*(set(p.questions) for p in points)))
        if len(qids) > 1:
            mats = [np.array([[p.questions[q] for q in qids] for p in by_cell[k]]) * 100.0 for k in keys]
            m = np.array([a.mean(axis=0) for a in mats])                          # (cells, Q)
            labels = [clusters.get(q) if clusters else None for q in qids]
            ids: dict = {}
            cluster_of = np.array([ids.setdefault(c if c is not None else ("q", i), len(ids))
                                   for i, c in enumerate(labels)])
            g, q = len(ids), len(qids)
            centred = m - m.mean(axis=1, keepdims=True)
            totals = np.stack([np.bincount(cluster_of, weights=row, minlength=g) for row in centred])
            cov_q = g / (g - 1) * totals @ totals.T / q ** 2
            for c, a in enumerate(mats):  # run x question noise: already in the seed level
                s = a.shape[0]
                if s > 1:
                    r = a - a.mean(axis=1, keepdims=True) - a.mean(axis=0, keepdims=True) + a.mean()
                    cov_q[c, c] -= float(np.sum(r ** 2) / ((s - 1) * (q - 1))) / (s * q)
            cov_q, df_q = _psd(cov_q), float(g - 1)
    return _Cells(keys, means, sizes, cov_seed, cov_q, df_seed, float(np.trace(dof)), df_q, len(runs), pooled)


# ------------------------------------------------------------------------------------------ the models


@dataclass
class _Model:
    kind: str
    """surface | arms"""
    contrast: object
    """xs -> rows over the cells: the gain of proportions x over 1:1:1 at the last rung as weights on the cell
    means (exact for arms, linearised for a surface): what its variance is computed from"""
    estimate: object
    """xs -> the estimated gains of proportions xs over 1:1:1 at the last rung"""
    fitted: object | None = None
    """x -> fitted accuracy at the last rung (surface)"""
    r2: float | None = None
    lof_p: float | None = None
    misfit: float = 0.0
    note: str = ""


def _surface(cells: _Cells, cov: np.ndarray, df: float) -> _Model:
    """Scheffé quadratic shape shared by the rungs, an offset and a scale per rung (last rung: offset free,
    scale 1), weighted least squares on the cell means; the scales by Nelder-Mead (variable projection)."""
    x = np.array([k[0] for k in cells.keys])
    blocks = sorted({k[1] for k in cells.keys})
    b_of = np.array([blocks.index(k[1]) for k in cells.keys])
    t = terms(x)
    w = cells.sizes
    scale = np.ones(len(blocks))
    others = [i for i in range(len(blocks)) if i != len(blocks) - 1]

    def design(scale):
        cols = [t * scale[b_of][:, None]] + [(b_of == i).astype(float)[:, None] for i in others]
        return np.hstack(cols)

    def fit(means, starts):
        """(scales, [terms, offsets]) of the weighted least-squares fit of `means`: the scales by Nelder-Mead on
        the variable-projection residual (terms and offsets solved exactly for given scales)."""
        def solve(full):
            d = design(full)
            return d, np.linalg.lstsq(d * np.sqrt(w)[:, None], means * np.sqrt(w), rcond=None)[0]

        def sse(log_scale):  # scales kept within [1/10, 10]: beyond, the last rung's shape degenerates to flat
            full = np.ones(len(blocks))
            full[others] = np.exp(np.clip(log_scale, -LOG_SCALE_BOUND, LOG_SCALE_BOUND))
            d, beta = solve(full)
            return float(np.sum(w * (means - d @ beta) ** 2))

        full = np.ones(len(blocks))
        if others:
            from scipy.optimize import minimize

            best = min((minimize(sse, np.log(s0), method="Nelder-Mead",
                                 options={"xatol": 1e-8, "fatol": 1e-12, "maxiter": 4000}) for s0 in starts),
                       key=lambda r: r.fun)
            full[others] = np.exp(np.clip(best.x, -LOG_SCALE_BOUND, LOG_SCALE_BOUND))
        return full, solve(full)[1]

    scale, beta = fit(cells.means, [np.full(len(others), v) for v in (0.5, 1.0, 2.0)])
    d = design(scale)
    u = terms([UNIFORM])[0]
    resid = cells.means - d @ beta
    if others:
        # the estimator linearised by central differences of the whole fit (the rungs' scales re-estimated each
        # time), so that the scales' estimation error reaches the gain's variance; Gauss-Newton's linearisation
        # missed it (a 30x too small standard error where the last rung has few arms)
        eps = 0.05
        h_terms, h_fit = np.zeros((6, len(resid))), np.zeros((len(resid), len(resid)))
        for c in range(len(resid)):
            outs = []
            for sign in (1, -1):
                m = cells.means.copy()
                m[c] += sign * eps
                sc, b = fit(m, [scale[others]])
                outs.append((b[:6], design(sc) @ b))
            h_terms[:, c] = (outs[0][0] - outs[1][0]) / (2 * eps)
            h_fit[:, c] = (outs[0][1] - outs[1][1]) / (2 * eps)
        n_params = np.linalg.matrix_rank(d) + len(others)
    else:
        wd = d * w[:, None]
        h = np.linalg.pinv(d.T @ wd) @ wd.T
        h_terms, h_fit, n_params = h[:6], d @ h, np.linalg.matrix_rank(d)
    proj = np.eye(len(resid)) - h_fit
    rcov = proj @ cov @ proj.T
    df_lof = len(resid) - n_params
    lof_p = None
    if df_lof > 0 and np.trace(rcov) > 0 and not others:  # across rungs the finalists were selected on their own
        # luck, so cells deviate from any shared shape; the test rejected a correct model in 25% of searches
        stat = float(resid @ np.linalg.pinv(rcov, rcond=1e-10) @ resid)
        lof_p = float(_sp.f.sf(stat / df_lof, df_lof, df if math.isfinite(df) and df > 0 else 1e6))
    total = float(np.sum(w * (cells.means - np.average(cells.means, weights=w)) ** 2))
    r2 = 1 - float(np.sum(w * resid ** 2)) / total if total > 0 else 1.0
    def fitted(xs):  # the last rung: scale 1, and its offset is in the Scheffé terms (they sum to 1)
        return terms(xs) @ beta[:6]

    def contrast(xs):  # the gain over 1:1:1 at the last rung, as weights on the cell means (linearised)
        return (terms(xs) - u) @ h_terms

    model = "Scheffé quadratic" + (f", shape shared by {len(blocks)} rungs (offset and scale each)"
                                   if len(blocks) > 1 else "")
    def estimate(xs):
        return fitted(np.asarray(xs)) - fitted(np.array([UNIFORM]))[0]

    return _Model("surface", contrast, estimate, fitted, r2, lof_p, float(np.max(np.abs(resid))), model)


def _arms(cells: _Cells) -> _Model:
    last = max(k[1] for k in cells.keys)
    index = {k[0]: i for i, k in enumerate(cells.keys) if k[1] == last}
    u = index.get(_key(UNIFORM))

    def contrast(xs):
        rows = np.zeros((len(xs), len(cells.keys)))
        for r, x in enumerate(xs):
            rows[r, index[_key(x)]] += 1.0
            rows[r, u] -= 1.0
        return rows

    return _Model("arms", contrast, lambda xs: contrast(xs) @ cells.means, note="best measured arm at the last rung")


# ------------------------------------------------------------------------------------------ the band


def _critical(rows: np.ndarray, cells: _Cells, *, n_sim: int, seed: int) -> float:
    """The 95% quantile of max |row · Z| / se(row) over the candidate rows, Z the cell means' error: Gaussian
    with the estimated covariance, scaled by sqrt(df / chi2_df) of the seed level (a multivariate t)."""
    se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", rows, cells.cov_seed + cells.cov_q, rows), 0.0))
    # a contrast without variance (an arm that answered every question as 1:1:1 did, with one seed) carries no
    # sampling error: its t is 0/0, and rounding noise over a floored se made the band's multiplier 1e143
    keep = se > 1e-9 * max(float(se.max(initial=0.0)), 1e-12)
    rows, se = rows[keep], se[keep]
    if not len(rows):
        return 0.0
    rng = np.random.default_rng(seed)
    n = len(cells.keys)

    def draw(cov):
        w, v = np.linalg.eigh(_psd(cov))
        return (v * np.sqrt(np.clip(w, 0, None))) @ rng.standard_normal((n, n_sim))

    z = draw(cells.cov_seed) + draw(cells.cov_q)
    if cells.df_seed > 0:  # both levels scaled by the seed level's chi-square: the question level's estimate also
        # leans on the seeds (its run x question noise is taken out with the seeds' residuals), so the band treats
        # the whole covariance as known to the seed level's degrees of freedom (conservative)
        z = z * np.sqrt(cells.df_seed / rng.chisquare(cells.df_seed, n_sim))
    t = np.abs(rows @ z) / se[:, None]
    return float(np.quantile(t.max(axis=0), 1 - ALPHA))


def _satterthwaite(row: np.ndarray, cells: _Cells) -> float:
    vs, vq = float(row @ cells.cov_seed @ row), float(row @ cells.cov_q @ row)
    den = (vs ** 2 / cells.df_seed if cells.df_seed > 0 else 0.0) + (vq ** 2 / cells.df_q if math.isfinite(cells.df_q) else 0.0)
    return (vs + vq) ** 2 / den if den > 0 else math.inf


# ------------------------------------------------------------------------------------------ recommend


def _text(r) -> str:
    return ":".join(map(str, r))


def recommend_points(points: list[Point], *, clusters: dict | None = None, n_boot: int = N_SIM,
                     seed: int = SIM_SEED) -> Recommendation:
    """The recommendation from the study's points (ValueError with fewer than 3 distinct ratios or without
    1:1:1 at the last rung). `clusters`: {question id: image id}; `n_boot`: draws of the band's multiplier."""
    arms_all = {_key(p.proportions) for p in points}
    if len(arms_all) < 3:
        raise ValueError(f"a recommendation needs at least 3 distinct ratios, got {len(arms_all)}")
    last = max(p.block for p in points)
    final = [p for p in points if p.block == last]
    if _key(UNIFORM) not in {_key(p.proportions) for p in final}:
        raise ValueError("a recommendation needs 1:1:1 at the last rung (the baseline every ratio is compared with)")
    cells = _cells(points, clusters)
    cov = cells.cov_seed + cells.cov_q
    blocks = sorted({p.block for p in points})
    widest = max(len({_key(p.proportions) for p in points if p.block == b}) for b in blocks)
    notes = []
    model = None
    if len(arms_all) >= MIN_SURFACE_RATIOS and widest >= MIN_SURFACE_RATIOS:
        model = _surface(cells, cov, cells.df_fit)
        if model.lof_p is not None and model.lof_p < LOF_ALPHA:
            notes.append(f"the quadratic surface does not fit the arms (lack-of-fit p = {model.lof_p:.3f}), so the "
                         "best measured arm is taken instead")
            model = None
    elif len(arms_all) < MIN_SURFACE_RATIOS:
        notes.append(f"{len(arms_all)} ratios are too few for a response surface (a quadratic needs "
                     f"{MIN_SURFACE_RATIOS}): the best measured arm is taken")
    else:
        notes.append("no rung has the ratios a surface needs: the best measured arm is taken")
    fallback = model is None
    if fallback:
        model = _arms(cells)
    final_arms = sorted({_key(p.proportions) for p in final} - {_key(UNIFORM)})
    final_mean = {k[0]: m for k, m in zip(cells.keys, cells.means) if k[1] == last}
    final_seeds = {k[0]: int(n) for k, n in zip(cells.keys, cells.sizes) if k[1] == last}
    # candidates and the chosen ratio
    if model.kind == "surface":
        fine = region_grid(points)
        fitted = model.fitted(fine)
        opt = fine[int(np.argmax(fitted))]
        ratio = simple_ratio(opt)
        rx = np.array(ratio, dtype=float) / sum(ratio)
        band_x = np.vstack([region_grid(points, BAND_GRID), rx[None, :]])
    else:
        best = max(final_arms, key=lambda a: (final_mean[a], a))
        ratio = simple_ratio(best, max_int=12, tolerance=1e-6)
        rx, opt = np.array(best), None
        band_x = np.array(final_arms)
    rows = model.contrast(band_x)
    crit = _critical(rows, cells, n_sim=n_boot, seed=seed)
    multi = len(blocks) > 1 and len(arms_all) > 2
    if multi:  # finalists were chosen on earlier rungs of the same seeds: at least Bonferroni over every arm
        row_x = model.contrast(rx[None, :])[0]
        crit = max(crit, t_quantile(1 - ALPHA / (2 * (len(arms_all) - 1)), max(_satterthwaite(row_x, cells), 1.0)))
    gains = model.estimate(band_x)
    ses = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", rows, cov, rows), 0.0))
    row = model.contrast(rx[None, :])[0]
    gain, se = float(model.estimate(rx[None, :])[0]), float(math.sqrt(max(row @ cov @ row, 0.0)))
    lo, hi = gain - crit * se, gain + crit * se
    rkey = _key(rx)
    measured = float(final_mean[rkey] - final_mean[_key(UNIFORM)]) if rkey in final_mean else None
    equivalence = float(np.max(np.maximum(np.abs(gains - crit * ses), np.abs(gains + crit * ses))))
    text = _text(ratio)
    # each last-rung arm against 1:1:1, measured, with its own band over the arms (at least Bonferroni's over
    # every arm after a search): what "use" also needs when the surface chose a trained ratio
    arms_rows, measured_ci = [], None
    arm_rows = _arms(cells).contrast(np.array(final_arms)) if final_arms else np.zeros((0, len(cells.keys)))
    arm_crit = crit if model.kind == "arms" else (_critical(arm_rows, cells, n_sim=n_boot, seed=seed + 1)
                                                  if len(arm_rows) else crit)
    if model.kind != "arms" and multi and len(arm_rows):  # the seed level's degrees of freedom; with one seed
        # (none) the question level's, as the arms model takes them: never a t with 1 df (an interval of +-480 pt)
        df_arms = cells.df_seed if cells.df_seed > 0 else min(max(_satterthwaite(r, cells), 1.0) for r in arm_rows)
        arm_crit = max(arm_crit, t_quantile(1 - ALPHA / (2 * (len(arms_all) - 1)), df_arms))
    for a, r in zip(final_arms, arm_rows):
        g, s = float(r @ cells.means), float(math.sqrt(max(r @ cov @ r, 0.0)))
        arms_rows.append({"ratio": label(a), "accuracy": round(float(final_mean[a]), 4), "seeds": final_seeds[a],
                          "gain": round(g, 4), "ci": [round(g - arm_crit * s, 4), round(g + arm_crit * s, 4)]})
        if a == rkey:
            measured_ci = (g - arm_crit * s, g + arm_crit * s)
    best_arm = max(final_arms, key=lambda a: final_mean[a]) if final_arms else None
    best_label = label(best_arm) if best_arm is not None and final_mean[best_arm] > final_mean[_key(UNIFORM)] else None
    # seeds needed: the pooled run variance of a difference, at the Bonferroni level over the candidates
    need = None
    if cells.pooled_seed_var is not None:
        need = seeds_needed(seed_var=2 * cells.pooled_seed_var, question_var=float(row @ cells.cov_q @ row),
                            effect=MIN_EFFECT, alpha=ALPHA / max(1, len(arms_all) - 1), paired=False)
    no_seed_level = cells.df_seed == 0
    source = "fitted" if model.kind == "surface" else "measured"
    fitted_gain = gain if model.kind == "surface" else None
    if model.kind == "surface" and measured is not None and measured_ci is not None:
        # the surface chose a ratio that was trained: its runs measure the gain, with the arms' own band
        gain, (lo, hi), source = measured, measured_ci, "measured"
    confirm_seeds = None  # the confirmation's size: sized for a discounted gain (the best of several is optimistic)
    if cells.pooled_seed_var is not None and gain > 0:
        planning = max(MIN_EFFECT, (gain + max(lo, 0.0)) / 2)
        confirm_seeds = seeds_needed(seed_var=2 * cells.pooled_seed_var, question_var=float(row @ cells.cov_q @ row),
                                     effect=planning, alpha=ALPHA, paired=False)
    what = f"{source} gain {gain:+.2f} points"
    adjusted = (f"95% interval [{lo:+.2f}, {hi:+.2f}], adjusted for choosing it among "
                + ("the surface's ratios" if source == "fitted" else f"{len(arms_all) - 1} ratios"))
    if gain <= 0 or (measured is not None and measured <= 0):
        why = (f"the best {'fitted ratio' if model.kind == 'surface' else 'ratio'}, {text}, is not above 1:1:1 "
               + (f"(measured {measured:+.2f} points)" if measured is not None and measured <= 0 else f"({what})"))
        outcome = "none"
    elif np.all(gains + crit * ses < MIN_EFFECT):
        why = f"every ratio's adjusted upper bound is below +{MIN_EFFECT:g} point (best {text}: {what}, {adjusted})"
        outcome = "none"
    elif lo > 0 and gain > MIN_EFFECT and not no_seed_level and measured is not None:
        why = f"{text}: {what}, {adjusted}: above +{MIN_EFFECT:g} point and established"
        outcome = "use"
    else:
        if no_seed_level:
            why_not = "one seed per ratio leaves run-to-run variation unestimated"
        elif measured is None:
            why_not = ("no run trained it to the last rung: a fitted gain is a screening value until the "
                       "confirmation measures it" + ("" if lo > 0 else " (and its interval includes 0)"))
        else:
            why_not = f"not established (the interval {'includes 0' if lo <= 0 else f'is above 0 but the gain is not above +{MIN_EFFECT:g}'})"
        why = f"{text}: {what}, {adjusted}; {why_not}"
        outcome = "candidate"
    if outcome == "none":
        eq = (f"every ratio tried is within ±{equivalence:.2f} points of 1:1:1 (simultaneous 95%)"
              if math.isfinite(equivalence) else "")
        why += "; " + eq + (f"; deciding a {MIN_EFFECT:g}-point gain needs about {need} seeds per ratio"
                            if need is not None and equivalence > MIN_EFFECT else "")
        headline, rec_ratio = "no ratio beats 1:1:1 detectably", None
        confirm, confirm_why = False, "nothing to confirm: no ratio is above 1:1:1 by what the data can show"
    elif outcome == "use":
        headline, rec_ratio = f"use about {text}", text
        confirm, confirm_why = True, "established on the study's data; a confirmation on fresh seeds makes it final"
    else:
        headline, rec_ratio = f"candidate {text}: confirm it", text
        confirm, confirm_why = True, (f"{text} is a fitted optimum that no run trained to the last rung" if measured is None
                                      else f"its gain is positive but not established: {adjusted}")
    if notes:
        why += "; " + "; ".join(notes)
    observed = [{"ratio": label(k[0]), **dict(zip(NAMES, k[0])), "block": k[1], "seeds": int(n),
                 "accuracy": float(m)} for k, m, n in zip(cells.keys, cells.means, cells.sizes)]
    out = Recommendation(
        outcome=outcome, headline=headline, reason=why, ratio=rec_ratio, best=best_label, method=model.kind,
        gain=gain, gain_ci=(lo, hi), gain_source=source, measured_gain=measured, fitted_gain=fitted_gain,
        equivalence=equivalence if math.isfinite(equivalence) else None, seeds_needed=need, confirm=confirm,
        confirm_seeds=confirm_seeds if confirm else None, confirm_reason=confirm_why, critical=crit,
        df=cells.df_seed, model=model.note, r2=model.r2,
        lack_of_fit_p=model.lof_p, n_runs=cells.runs, n_ratios=len({p.proportions for p in final}),
        n_arms=len(arms_all), blocks=blocks, n_boot=n_boot, arms=arms_rows, observed=observed,
        uniform=float(final_mean[_key(UNIFORM)]))
    if model.kind == "surface":
        coarse = simplex_grid(20)
        region_rows = model.contrast(band_x[:-1])
        near = (model.estimate(band_x[:-1]) + crit * np.sqrt(np.maximum(
            np.einsum("ij,jk,ik->i", region_rows, cov, region_rows), 0))) >= gain
        region = band_x[:-1][near]
        out.optimum = tuple(float(v) for v in opt)
        out.region = [tuple(float(v) for v in r) for r in region]
        out.proportion_ci = {c: (float(region[:, i].min()), float(region[:, i].max())) for i, c in enumerate(NAMES)} \
            if len(region) else {}
        out.predicted = float(model.fitted(rx[None, :])[0])
        out.uniform = float(model.fitted(np.array([UNIFORM]))[0])
        out.lack_of_fit = model.misfit
        out.surface = [{**dict(zip(NAMES, map(float, g))), "accuracy": float(a)}
                       for g, a in zip(coarse, model.fitted(coarse))]
    return out


def recommend(rows: list[dict], *, eval_tag: str | None = None, n_boot: int = N_SIM,
              seed: int = SIM_SEED) -> Recommendation | None:
    """The recommendation from a store's rows (compare.scan), with the confirmation's outcome when its runs are
    in the rows; None when fewer than 3 distinct ratios were evaluated or 1:1:1 is missing at the last rung."""
    from toolkit.evaluation.compare import _per_question, image_ids
    from toolkit.evaluation.surface import points_from_rows

    points, info = points_from_rows(rows, eval_tag=eval_tag, predictions=_per_question)
    if len({p.proportions for p in points}) < 3:
        return None
    if any(p.questions is None for p in points):  # the question level only where every run has its answers
        points = [Point(p.proportions, p.accuracy, p.seed, p.block) for p in points]
    clusters = image_ids(info["rows"][0])  # the runs answer the same questions: one file names their images
    try:
        rec = recommend_points(points, clusters=clusters or None, n_boot=n_boot, seed=seed)
    except ValueError:
        return None
    rec.confirmation = confirmation_outcome(rows, rec, info)
    return rec


# ------------------------------------------------------------------------------------------ confirmation


def confirmation_outcome(rows: list[dict], rec: Recommendation, info: dict) -> dict | None:
    """The confirmation of `rec` in `rows`: runs of the same settings (but steps) on another eval set, with
    seeds the study did not use, of the recommended ratio and 1:1:1; compared by compare's verdict rules (one
    comparison, nothing chosen on these data). {state: confirmed | not confirmed | pending, ratio, delta, ci,
    seeds, eval_tag, text}, or None when no such runs exist (the job system marks it pending while it runs)."""
    from toolkit.evaluation import compare
    from toolkit.evaluation.verdict import fingerprint

    ratio = rec.ratio or rec.best
    if ratio is None or info.get("fingerprint") is None:
        return None
    study_seeds = {str(r.get("seed")) for r in info["rows"]}
    wanted = {compare.ratio_key(tuple(float(v) for v in ratio.split(":"))), compare.ratio_key((1, 1, 1))}

    def same(r):
        s = {k: v for k, v in (r.get("settings") or {}).items() if k != "training.max_steps"}
        return fingerprint(s) == info["fingerprint"]

    conf = [r for r in rows if r["kind"] != "base" and r.get("ratio_values") and r["eval_tag"] != info["eval_tag"]
            and str(r.get("seed")) not in study_seeds and same(r) and not r.get("snapshot")
            and compare.ratio_key(r["ratio_values"], r.get("mode") or "rank") in wanted]
    if not conf:
        return None
    tags = [r["eval_tag"] for r in conf]
    tag = max(sorted(set(tags)), key=tags.count)
    conf = [r for r in conf if r["eval_tag"] == tag]
    by_ratio = {}
    for r in conf:
        by_ratio.setdefault(compare.ratio_key(r["ratio_values"], r.get("mode") or "rank"), []).append(r)
    seeds = sorted({str(r.get("seed")) for r in conf})
    base = {"ratio": ratio, "eval_tag": tag, "seeds": seeds, "delta": None, "ci": None}
    if len(by_ratio) < 2 or min(len(v) for v in by_ratio.values()) < 2:
        return {**base, "state": "pending", "text": f"confirmation on {tag}: {len(conf)} run(s) evaluated so far, "
                "2 seeds of each ratio needed"}
    try:
        a = compare.analyze(conf, baseline="1:1:1", n_boot=2000)
    except Exception as exc:  # noqa: BLE001  (a confirmation that cannot be analysed is reported, not raised)
        return {**base, "state": "pending", "text": f"confirmation on {tag} cannot be analysed yet: {exc}"}
    c = next(iter(a.comparisons), None)
    if c is None:
        return {**base, "state": "pending", "text": f"confirmation on {tag}: no per-question results to compare"}
    state = "confirmed" if a.verdict.label == "positive" else "not confirmed"
    what = (f"{c.delta:+.2f} points [{c.ci_low:+.2f}, {c.ci_high:+.2f}] over 1:1:1 on fresh seeds "
            f"({c.seeds} vs {c.baseline_seeds}, eval set {tag})")
    text = {"confirmed": f"confirmed: use {ratio}, {what}",
            "not confirmed": f"not confirmed: {ratio} {what}; "
                             + ("significant but not above +1 point" if a.verdict.label == "weak positive"
                                else "no ratio beats 1:1:1 detectably")}[state]
    return {**base, "state": state, "delta": c.delta, "ci": [c.ci_low, c.ci_high], "p_value": c.p_value,
            "verdict": a.verdict.label, "text": text}
