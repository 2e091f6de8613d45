"""Statistics of the comparison: Student's t (scipy), mean ± t-interval over seeds, the two-level bootstrap
of a ratio against the baseline (questions resampled by image when they share images), Holm's adjustment, the
variance components of a comparison and the seeds needed to decide (a noncentral-t power calculation).

    >>> round(t_quantile(0.975, 2), 4)
    4.3027
    >>> mean_ci([50.0, 52.0, 54.0])                      # (mean, sd, 95% CI half-width) over seeds
    >>> two_level_mean_ci([50.0, 50.0], questions=400)   # seeds and questions: 4.90, not 0
    >>> t = two_level_bootstrap(ratio=a, baseline=b, clusters=image_ids)   # a, b: (seeds, questions) accuracies
    >>> t.delta, t.ci_low, t.ci_high, t.p_value, t.df
    >>> holm([0.01, 0.04, 0.30])                         # [0.03, 0.08, 0.30]
    >>> seeds_needed(seed_var=2.9, question_var=0.1, effect=1.0, alpha=0.05 / 3)

Method of `two_level_bootstrap` (a crossed design: every run of both arms answers the same questions). Each
replicate resamples seeds with replacement (once for both arms, by seed index, when both arms have the same
seeds, which share the data order: the pairing removes their common seed effect; otherwise each arm on its
own) and then questions with replacement (the same questions for both arms: pairing by question), and takes
Δ* = mean over resampled seeds and questions of ratio − baseline. When `clusters` gives each question's image,
whole images are resampled instead: VQAv2 asks several questions about one image, and their answers are not
independent (resampling them one by one understates the question-level variance). Replicates are sums of seed
counts × each seed's accuracy summed per image × image counts, vectorised with numpy. The bootstrap variance of
a mean of S seeds is (S-1)/S of the unbiased one, which matters with 3 seeds, so the bootstrap standard error is
scaled by sqrt(S/(S-1)); the 95% interval and the two-sided p-value then come from Student's t with Satterthwaite's
degrees of freedom over the seed level (S-1, or Welch's for unpaired seeds) and the question level (images or
questions - 1). With few seeds that is close to a t-test over seeds: a percentile interval from 3 seeds is far
too narrow (a null study of 4 ratios, 3 seeds, then reaches p < 0.05 in ~16% of cases). One seed per arm leaves
the seed level unestimated: the test then covers question sampling only, and the verdict never rests on it.

Variance components (for the seeds needed): Var(Δ) = seed_var / S + question_var_fixed, where seed_var is the
variance of one run's difference (it holds the run × question noise averaged over the questions, which more
seeds do reduce) and question_var_fixed the arm × question interaction over the evaluated questions (which more
seeds do not reduce: only more questions do). The question-level variance of Δ measured from S seeds holds both
the interaction and the run × question noise / S; the latter is estimated from the two-way residual mean square
and taken out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special as _sc

# Student's t and the normal are the scipy.special functions that scipy.stats' t and norm call, imported without
# scipy.stats: that import costs every process that only wants a p-value 1-2 s more. `power` imports it (nct).

N_BOOT = 10_000
BOOT_SEED = 0


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom (the normal for df = inf)."""
    return float(_sc.ndtr(t) if not math.isfinite(df) else _sc.stdtr(df, t))


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t; t_quantile(0.975, 2) = 4.3027 (the normal's for df = inf)."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile: need 0 < p < 1 and df > 0, got p={p}, df={df}")
    return float(_sc.ndtri(p) if not math.isfinite(df) else _sc.stdtrit(df, p))


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float | None, float | None]:
    """(mean, sample standard deviation, CI half-width by Student's t); both None for one value."""
    n = len(values)
    mean = float(sum(values)) / n
    if n < 2:
        return mean, None, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, sd, t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)


def two_level_mean_ci(values: list[float], *, questions: int | None, level: float = 0.95) -> float | None:
    """CI half-width of the mean accuracy (%) of seeds that answered the same `questions`: the seed level
    (sample variance / n) plus the question level, which more seeds do not shrink (at most p(1 - p) / questions
    for scores in [0, 1]: binomial, an upper bound for VQA's soft scores), with Welch-Satterthwaite degrees of
    freedom. Seeds that agree exactly (deterministic runs) still leave the question level: never a zero-width
    interval. None for one value."""
    n = len(values)
    if n < 2:
        return None
    mean = float(sum(values)) / n
    seed = sum((v - mean) ** 2 for v in values) / (n - 1) / n
    p = min(max(mean / 100, 0.0), 1.0)
    question = 1e4 * p * (1 - p) / questions if questions else 0.0
    total = seed + question
    if total <= 0:
        return 0.0
    df = total ** 2 / (seed ** 2 / (n - 1)) if seed > 0 else math.inf
    return t_quantile(0.5 + level / 2, df) * math.sqrt(total)


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
    question_var_fixed: float | None = None
    """the part of `question_var` that more seeds would not reduce (arm × question interaction); None with one
    seed per arm, where it cannot be told from run × question noise"""
    n_clusters: int | None = None
    """independent units of the question level: images when questions were clustered, else questions"""
    seed_df: float = math.inf
    """degrees of freedom of the seed level (S-1 paired, Welch's otherwise)"""

    def __post_init__(self):
        if self.n_boot < 1:
            raise ValueError(f"n_boot: must be >= 1, got {self.n_boot}")

    def ci(self, level: float) -> tuple[float, float]:
        """delta ± t(df) · se at another level (e.g. a simultaneous, Bonferroni-adjusted one)."""
        if self.se <= 0 and self.n_clusters:
            return _no_discordance_ci(self.delta, self.n_clusters, level)
        half = t_quantile(0.5 + level / 2, self.df) * self.se
        return self.delta - half, self.delta + half


def _no_discordance_ci(delta: float, units: int, level: float) -> tuple[float, float]:
    """The interval of a difference that did not vary at all (every question, in every seed, scored alike in both
    arms, e.g. two short runs that both answer as the base model): not [delta, delta], which would claim certainty,
    but what `units` independent questions (or images) with no discordance can still hide: a share of discordant
    units up to 1 - ((1 - level) / 2)^(1/units) (the exact binomial bound for 0 events, "rule of three" at 95 %
    one-sided), each worth up to 100 points either way."""
    half = 100.0 * (1.0 - ((1.0 - level) / 2) ** (1.0 / units))
    return max(-100.0, delta - half), min(100.0, delta + half)


def _counts(rng, n: int, reps: int) -> np.ndarray:
    """(reps, n) resampling counts (integers): how often each of n items is drawn in n draws with replacement."""
    idx = rng.integers(0, n, size=(reps, n))
    idx += (np.arange(reps) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=reps * n).reshape(reps, n)


def _boot_deltas(a: np.ndarray, b: np.ndarray, paired: bool, n_boot: int, rng, cluster_of: np.ndarray,
                 n_clusters: int) -> np.ndarray:
    """n_boot replicates of delta. A replicate weighs each question by how often its cluster was drawn (over the
    questions drawn) and each seed by how often it was drawn: a sum over clusters of each seed's question sum in
    the cluster (computed once) times the cluster's count, so a chunk of replicates is one (replicates, clusters)
    count array and a product with the (seeds, clusters) sums, never a (replicates, questions) weight array. The
    products are einsums, not BLAS calls: with a few seeds they are as fast, and they start no BLAS threads."""
    s_a, q = a.shape
    s_b = b.shape[0]
    out = np.empty(n_boot)
    chunk = max(1, 4_000_000 // (q * 2))  # replicates per draw (unchanged: the same draws give the same deltas)
    plain = n_clusters == q and np.array_equal(cluster_of, np.arange(q))  # every question its own cluster

    def by_cluster(m: np.ndarray) -> np.ndarray:  # (S, Q) -> (S, G): each seed's sum over each cluster's questions
        if plain:
            return np.ascontiguousarray(m)
        sums = np.zeros((m.shape[0], n_clusters))
        for row, out_row in zip(m, sums):
            out_row += np.bincount(cluster_of, weights=row, minlength=n_clusters)
        return sums

    sizes = np.bincount(cluster_of, minlength=n_clusters).astype(float)  # questions per cluster
    sums = [by_cluster(a - b)] if paired else [by_cluster(a), by_cluster(b)]
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        cq = _counts(rng, n_clusters, k).astype(float)                  # (k, G) cluster counts
        drawn = q if plain else np.maximum(np.einsum("kg,g->k", cq, sizes), 1e-300)  # questions drawn
        if paired:
            cs = _counts(rng, s_a, k) / s_a                             # (k, S) seed weights
            out[start:start + k] = np.einsum("ks,ks->k", cs, np.einsum("kg,sg->ks", cq, sums[0])) / drawn
        else:
            ca, cb = _counts(rng, s_a, k) / s_a, _counts(rng, s_b, k) / s_b
            out[start:start + k] = (np.einsum("ks,ks->k", ca, np.einsum("kg,sg->ks", cq, sums[0]))
                                    - np.einsum("ks,ks->k", cb, np.einsum("kg,sg->ks", cq, sums[1]))) / drawn
    return out


def cluster_index(clusters, q: int) -> tuple[np.ndarray, int]:
    """(cluster number of each of q questions, number of clusters); None: every question its own cluster."""
    if clusters is None:
        return np.arange(q), q
    labels = list(clusters)
    if len(labels) != q:
        raise ValueError(f"clusters: need one label per question ({q}), got {len(labels)}")
    index: dict = {}
    return np.array([index.setdefault(c if c is not None else ("question", i), len(index))
                     for i, c in enumerate(labels)]), len(index)


def mean_variance(values: np.ndarray, cluster_of: np.ndarray, n_clusters: int) -> float:
    """Variance of the mean of `values` (one per question) under cluster sampling (the ratio estimator's):
    G/(G-1) · Σ_g (T_g - n_g·mean)² / Q²; with every question its own cluster, var(values, ddof=1) / Q."""
    q = len(values)
    if n_clusters < 2 or q < 2:
        return 0.0
    mean = float(values.mean())
    totals = np.bincount(cluster_of, weights=values - mean, minlength=n_clusters)
    return float(n_clusters / (n_clusters - 1) * np.sum(totals ** 2) / q ** 2)


def _residual_ms(m: np.ndarray) -> float | None:
    """Two-way (seed × question) residual mean square of a (S, Q) matrix; None with one seed or question."""
    s, q = m.shape
    if s < 2 or q < 2:
        return None
    r = m - m.mean(axis=1, keepdims=True) - m.mean(axis=0, keepdims=True) + m.mean()
    return float(np.sum(r ** 2) / ((s - 1) * (q - 1)))


def two_level_bootstrap(*, ratio, baseline, paired_seeds: bool | None = None, clusters=None, n_boot: int = N_BOOT,
                        seed: int = BOOT_SEED) -> BootstrapTest:
    """Two-level bootstrap of `ratio` − `baseline`: arrays (seeds, questions) of per-question accuracy on the
    same questions (columns aligned). `paired_seeds` defaults to "both arms have as many seeds" (the caller
    aligns rows by seed); `clusters` (one label per question column, e.g. its image id) resamples whole clusters;
    see the module docstring for the method.

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
    cluster_of, n_clusters = cluster_index(clusters, q)
    delta = float(a.mean() - b.mean())
    boot = _boot_deltas(a, b, paired, n_boot, np.random.default_rng(seed), cluster_of, n_clusters)
    # the two levels' variances of delta, by moments, for the small-sample correction and the degrees of freedom
    question_var = mean_variance(a.mean(axis=0) - b.mean(axis=0), cluster_of, n_clusters)
    if paired and s_a > 1:
        seed_var = float(np.var(a.mean(axis=1) - b.mean(axis=1), ddof=1))
        v_seed, df_seed = seed_var / s_a, float(s_a - 1)
        noise = _residual_ms(a - b)
        noise = None if noise is None else noise / (s_a * q)
    elif not paired and s_a > 1 and s_b > 1:
        va, vb = float(np.var(a.mean(axis=1), ddof=1)), float(np.var(b.mean(axis=1), ddof=1))
        seed_var, v_seed = va + vb, va / s_a + vb / s_b
        den = (va / s_a) ** 2 / (s_a - 1) + (vb / s_b) ** 2 / (s_b - 1)
        df_seed = v_seed ** 2 / den if den > 0 else math.inf
        ma, mb = _residual_ms(a), _residual_ms(b)
        noise = None if ma is None or mb is None else (ma / s_a + mb / s_b) / q
    else:
        seed_var, v_seed, df_seed, noise = None, 0.0, math.inf, None
    fixed = None if noise is None else max(0.0, question_var - noise)
    s_min = min(s_a, s_b)
    correction = s_min / (s_min - 1) if s_min > 1 else 1.0
    var = float(np.var(boot)) * correction if n_boot > 1 else v_seed + question_var
    df_q = n_clusters - 1
    den = (v_seed ** 2 / df_seed if math.isfinite(df_seed) else 0.0) + (question_var ** 2 / df_q if df_q > 0 else 0.0)
    df = (v_seed + question_var) ** 2 / den if den > 0 else math.inf
    se = math.sqrt(max(var, 0.0))
    extra = {"question_var_fixed": fixed, "n_clusters": n_clusters, "seed_df": df_seed}
    if se <= 1e-12 * max(1.0, abs(delta)):
        p = 1.0 if abs(delta) <= 1e-12 else 0.0
        low, high = _no_discordance_ci(delta, n_clusters, 0.95)
        return BootstrapTest(delta, 0.0, low, high, p, df, paired, seed_var, question_var, n_boot, **extra)
    t = abs(delta) / se
    p = min(1.0, 2.0 * (1.0 - t_cdf(t, df)))
    half = t_quantile(0.975, df) * se
    return BootstrapTest(delta, se, delta - half, delta + half, p, df, paired, seed_var, question_var, n_boot, **extra)


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


def power(*, seeds: int, seed_var: float, question_var: float, effect: float, alpha: float,
          paired: bool = True) -> float:
    """Power of the two-sided t-test at `alpha` to detect `effect` with `seeds` seeds per arm: noncentral t with
    S-1 degrees of freedom (paired seeds; 2(S-1) unpaired) and noncentrality effect / sqrt(seed_var/S +
    question_var), `question_var` being the part more seeds do not reduce."""
    if seeds < 2:
        return 0.0
    df = seeds - 1 if paired else 2 * (seeds - 1)
    sd = math.sqrt(max(seed_var / seeds + question_var, 1e-300))
    from scipy import stats as _sp

    crit = _sp.t.ppf(1 - alpha / 2, df)
    ncp = effect / sd
    value = float(_sp.nct.sf(crit, df, ncp) + _sp.nct.cdf(-crit, df, ncp))
    if math.isnan(value):  # scipy's noncentral t gives nan far in its tail (ncp ~10): there the normal limit holds
        value = float(_sp.norm.sf(crit - ncp) + _sp.norm.cdf(-crit - ncp))
    return value


def seeds_needed(*, seed_var: float, question_var: float, effect: float, alpha: float, power_target: float = 0.8,
                 paired: bool = True, max_seeds: int = 1000) -> int | None:
    """Smallest number of seeds per arm whose t-test at `alpha` detects `effect` with `power_target` (`power`),
    given the per-seed variance of a difference and the question-level variance that more seeds do not reduce.
    None when even `max_seeds` is not enough (more questions are needed).

        >>> seeds_needed(seed_var=2.88, question_var=0.0, effect=1.0, alpha=0.05)
        25
    """
    def enough(s: int) -> bool:
        return power(seeds=s, seed_var=seed_var, question_var=question_var, effect=effect, alpha=alpha,
                     paired=paired) >= power_target

    if not enough(max_seeds):
        return None
    lo, hi = 1, max_seeds  # power is monotone in s: bisection
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


def questions_needed(*, question_var: float, n_questions: int, seed_var: float, seeds: int, effect: float,
                     alpha: float, power: float = 0.8) -> int | None:
    """Questions for which the question-level variance (the part seeds do not reduce) leaves room to detect
    `effect` at `seeds` seeds (the normal approximation); None when the seed variance alone forbids it."""
    z = t_quantile(1 - alpha / 2, math.inf) + t_quantile(power, math.inf)
    room = (effect / z) ** 2 - seed_var / seeds
    if room <= 0:
        return None
    return max(n_questions, math.ceil(question_var * n_questions / room))
