"""Statistics of the comparison, with no dependency beyond numpy: Student's t (quantiles from the regularized
incomplete beta function, as scipy is not a dependency), mean with a t confidence interval, and the paired
bootstrap over questions.

    >>> round(t_quantile(0.975, 2), 4)
    4.3027
    >>> mean_ci([50.0, 52.0, 54.0])          # (mean, sd, CI half-width)
    >>> paired_bootstrap(diffs)              # (mean diff, 2.5th pct, 97.5th pct, two-sided p)
"""

from __future__ import annotations

import math

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
