"""Statistics of the comparison, numpy only: Student's t (from the regularized incomplete beta function, as
scipy is not a dependency), mean ± t-interval over seeds, the two-level bootstrap of a ratio against the
baseline, Holm's adjustment, and the seeds needed to decide.

    >>> round(t_quantile(0.975, 2), 4)
    4.3027
    >>> mean_ci([50.0, 52.0, 54.0])                      # (mean, sd, 95% CI half-width) over seeds
    >>> t = two_level_bootstrap(ratio=a, baseline=b)     # a, b: (seeds, questions) accuracies, shared questions
    >>> t.delta, t.ci_low, t.ci_high, t.p_value, t.df
    >>> holm([0.01, 0.04, 0.30])                         # [0.03, 0.08, 0.30]
    >>> seeds_needed(seed_var=2.9, question_var=0.1, effect=1.0, alpha=0.05 / 3)

Method of `two_level_bootstrap` (a crossed design: every run of both arms answers the same questions). Each
replicate resamples seeds with replacement (once for both arms, by seed index, when both arms have the same
seeds, which share the data order: the pairing removes their common seed effect; otherwise each arm on its
own) and then questions with replacement (the same questions for both arms: pairing by question), and takes
Δ* = mean over resampled seeds and questions of ratio − baseline. Replicates are sums of seed counts ×
accuracy matrix × question counts, vectorised with numpy. The bootstrap variance of a mean of S seeds is
(S-1)/S of the unbiased one, which matters with 3 seeds, so the bootstrap standard error is scaled by
sqrt(S/(S-1)); the 95% interval and the two-sided p-value then come from Student's t with Satterthwaite's
degrees of freedom over the seed level (S-1, or Welch's for unpaired seeds) and the question level (Q-1). With
few seeds that is close to a t-test over seeds: a percentile interval from 3 seeds is far too narrow (a null
study of 4 ratios, 3 seeds, then reaches p < 0.05 in ~16% of cases). One seed per arm leaves the seed level
unestimated: the test then covers question sampling only, and the verdict never rests on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

N_BOOT = 10_000
BOOT_SEED = 0


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz, Numerical Recipes 6.4)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for aa in (m * (b - m) * x / ((a - 1 + 2 * m) * (a + 2 * m)),
                   -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 1 + 2 * m))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t (bisection on `t_cdf`); t_quantile(0.975, 2) = 4.3027."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile: need 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float | None, float | None]:
    """(mean, sample standard deviation, CI half-width by Student's t); both None for one value."""
    n = len(values)
    mean = float(sum(values)) / n
    if n < 2:
        return mean, None, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, sd, t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)


def paired_bootstrap(diffs, *, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> tuple[float, float, float, float]:
    """(mean difference, 2.5th and 97.5th percentile of resampled means, two-sided p) of paired differences.

    p = 2·min(share of resampled means <= 0, share >= 0), with +1 smoothing and capped at 1: below 0.05
    exactly when the 95% interval leaves 0 out."""
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // n)  # bounds the (chunk, n) index array to ~16 MB
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        means[start:start + k] = d[rng.integers(0, n, size=(k, n))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    below, above = int(np.sum(means <= 0)) + 1, int(np.sum(means >= 0)) + 1
    return float(d.mean()), float(lo), float(hi), min(1.0, 2.0 * min(below, above) / (n_boot + 1))


# ------------------------------------------------------------------------------------------ two levels


@dataclass(frozen=True)
class BootstrapTest:
    """A ratio against the baseline over seeds and questions, in the units of the inputs (points)."""

    delta: float
    """mean over seeds and questions of ratio minus baseline"""
    se: float
    """two-level bootstrap standard error (seed level small-sample corrected)"""
    ci_low: float
    ci_high: float
    """95% interval: delta ± t(df) · se"""
    p_value: float
    """two-sided, H0: delta = 0"""
    df: float
    """Satterthwaite degrees of freedom (inf when nothing varies)"""
    paired_seeds: bool
    """seeds resampled together (same seeds in both arms, so the same data order)"""
    seed_var: float | None
    """variance over seeds of a run's difference to the baseline (paired) or sum of the two arms' variances:
    the per-seed variance the seeds-needed estimate uses; None with one seed"""
    question_var: float
    """variance of delta from question sampling alone (already divided by the number of questions)"""
    n_boot: int

    def __post_init__(self):
        if self.n_boot < 1:
            raise ValueError(f"n_boot: must be >= 1, got {self.n_boot}")

    def ci(self, level: float) -> tuple[float, float]:
        """delta ± t(df) · se at another level (e.g. a simultaneous, Bonferroni-adjusted one)."""
        half = _t_crit(0.5 + level / 2, self.df) * self.se
        return self.delta - half, self.delta + half


def _t_crit(p: float, df: float) -> float:
    return t_quantile(p, df) if math.isfinite(df) else t_quantile(p, 1e7)


def _counts(rng, n: int, reps: int) -> np.ndarray:
    """(reps, n) resampling counts: how often each of n items is drawn in n draws with replacement."""
    idx = rng.integers(0, n, size=(reps, n)) + (np.arange(reps) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=reps * n).reshape(reps, n).astype(float)


def _boot_deltas(a: np.ndarray, b: np.ndarray, paired: bool, n_boot: int, rng) -> np.ndarray:
    s_a, q = a.shape
    s_b = b.shape[0]
    out = np.empty(n_boot)
    chunk = max(1, 4_000_000 // (q * 2))  # bounds the (chunk, q) count arrays to a few tens of MB
    diff = a - b if paired else None
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        cq = _counts(rng, q, k) / q                               # (k, Q) question weights, rows sum to 1
        if paired:
            cs = _counts(rng, s_a, k) / s_a                       # (k, S) seed weights
            out[start:start + k] = np.einsum("ks,sq,kq->k", cs, diff, cq)
        else:
            ca, cb = _counts(rng, s_a, k) / s_a, _counts(rng, s_b, k) / s_b
            out[start:start + k] = (np.einsum("ks,sq,kq->k", ca, a, cq) - np.einsum("ks,sq,kq->k", cb, b, cq))
    return out


def two_level_bootstrap(*, ratio, baseline, paired_seeds: bool | None = None, n_boot: int = N_BOOT,
                        seed: int = BOOT_SEED) -> BootstrapTest:
    """Two-level bootstrap of `ratio` − `baseline`: arrays (seeds, questions) of per-question accuracy on the
    same questions (columns aligned). `paired_seeds` defaults to "both arms have as many seeds" (the caller
    aligns rows by seed); see the module docstring for the method.

        >>> two_level_bootstrap(ratio=100 * np.ones((3, 50)), baseline=np.zeros((3, 50))).delta
        100.0
    """
    a, b = np.asarray(ratio, dtype=float), np.asarray(baseline, dtype=float)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or a.shape[1] == 0:
        raise ValueError(f"ratio, baseline: need (seeds, questions) arrays on the same questions, got "
                         f"{a.shape} and {b.shape}")
    if n_boot < 1:
        raise ValueError(f"n_boot: must be >= 1, got {n_boot}")
    s_a, s_b, q = a.shape[0], b.shape[0], a.shape[1]
    paired = (s_a == s_b) if paired_seeds is None else bool(paired_seeds)
    if paired and s_a != s_b:
        raise ValueError(f"paired_seeds: both arms need the same seeds, got {s_a} and {s_b}")
    delta = float(a.mean() - b.mean())
    boot = _boot_deltas(a, b, paired, n_boot, np.random.default_rng(seed))
    # the two levels' variances of delta, by moments, for the small-sample correction and the degrees of freedom
    question_var = float(np.var(a.mean(axis=0) - b.mean(axis=0), ddof=1) / q) if q > 1 else 0.0
    if paired and s_a > 1:
        seed_var = float(np.var(a.mean(axis=1) - b.mean(axis=1), ddof=1))
        v_seed, df_seed = seed_var / s_a, float(s_a - 1)
    elif not paired and s_a > 1 and s_b > 1:
        va, vb = float(np.var(a.mean(axis=1), ddof=1)), float(np.var(b.mean(axis=1), ddof=1))
        seed_var, v_seed = va + vb, va / s_a + vb / s_b
        den = (va / s_a) ** 2 / (s_a - 1) + (vb / s_b) ** 2 / (s_b - 1)
        df_seed = v_seed ** 2 / den if den > 0 else math.inf
    else:
        seed_var, v_seed, df_seed = None, 0.0, math.inf
    s_min = min(s_a, s_b)
    correction = s_min / (s_min - 1) if s_min > 1 else 1.0
    var = float(np.var(boot)) * correction if n_boot > 1 else v_seed + question_var
    den = (v_seed ** 2 / df_seed if math.isfinite(df_seed) else 0.0) + (question_var ** 2 / (q - 1) if q > 1 else 0.0)
    df = (v_seed + question_var) ** 2 / den if den > 0 else math.inf
    se = math.sqrt(max(var, 0.0))
    if se <= 1e-12 * max(1.0, abs(delta)):
        p = 1.0 if abs(delta) <= 1e-12 else 0.0
        return BootstrapTest(delta, 0.0, delta, delta, p, df, paired, seed_var, question_var, n_boot)
    t = abs(delta) / se
    p = min(1.0, 2.0 * (1.0 - t_cdf(t, df if math.isfinite(df) else 1e7)))
    half = _t_crit(0.975, df) * se
    return BootstrapTest(delta, se, delta - half, delta + half, p, df, paired, seed_var, question_var, n_boot)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the given order: the i-th smallest p times (m - i + 1), made
    monotone and capped at 1. Controls the family-wise error over the m comparisons.

        >>> holm([0.01, 0.04, 0.30])
        [0.03, 0.08, 0.3]
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


def seeds_needed(*, seed_var: float, question_var: float, effect: float, alpha: float, power: float = 0.8,
                 max_seeds: int = 1000) -> int | None:
    """Smallest number of seeds per arm for which a two-sided t-test at `alpha` detects `effect` with `power`,
    given the per-seed variance of a difference and the question-sampling variance of delta (which more
    seeds do not reduce). None when even `max_seeds` is not enough (more questions are needed).

        >>> seeds_needed(seed_var=2.88, question_var=0.0, effect=1.0, alpha=0.05)
        25
    """
    def enough(s: int) -> bool:
        return (_t_crit(1 - alpha / 2, s - 1) + _t_crit(power, s - 1)) ** 2 * (seed_var / s + question_var) <= effect ** 2

    if not enough(max_seeds):
        return None
    lo, hi = 1, max_seeds  # enough() is monotone in s: bisection, ~10 t quantiles
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


def questions_needed(*, question_var: float, n_questions: int, seed_var: float, seeds: int, effect: float,
                     alpha: float, power: float = 0.8) -> int | None:
    """Questions for which the question-sampling variance leaves room to detect `effect` at `seeds` seeds (the
    normal approximation); None when the seed variance alone forbids it."""
    z = _t_crit(1 - alpha / 2, math.inf) + _t_crit(power, math.inf)
    room = (effect / z) ** 2 - seed_var / seeds
    if room <= 0:
        return None
    return max(n_questions, math.ceil(question_var * n_questions / room))
