"""The study's verdict and what it is computed from: the settings that must match for runs to be pooled as seeds
(`run_settings`, `fingerprint`), the records of a ratio's runs (`Group`) and of its test against the baseline
(`Comparison`), and the rules (`verdict`), by the study's success criterion: more than +1 point over the baseline.

    >>> fingerprint(run_settings(doc))                    # equal for runs that differ only in seed and allocation
    >>> v = verdict(groups, comparisons, "1:1:1")         # comparisons: {ratio: Comparison}, Holm-adjusted
    >>> v.label, v.reason, v.seeds_needed                 # "positive" | "weak positive" | "negative" | "inconclusive"

Rules: *positive* Δ > MIN_EFFECT and significant after Holm's adjustment; *weak positive* significant, Δ ≤
MIN_EFFECT; *negative* every ratio's simultaneous (Bonferroni) 95% upper bound below +MIN_EFFECT, so the gain
the study looks for is ruled out; *inconclusive* otherwise, with the seeds (and questions) needed to decide at
80% power from the observed variances. One seed per ratio is never enough for anything but inconclusive.
toolkit.evaluation.compare builds the inputs from the adapter store.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from toolkit import runs
from toolkit.evaluation.stats import questions_needed, seeds_needed

MIN_EFFECT = 1.0
"""points of accuracy a ratio must gain over the baseline: the study's success criterion"""
ALPHA = 0.05
"""family-wise significance level (Holm over the K-1 comparisons with the baseline)"""


# ------------------------------------------------------------------------------------------ settings


_IGNORED_TRAINING = ("seed", "checkpoint_every", "gradient_checkpointing")
"""training keys that do not change what is learned (gradient checkpointing recomputes the same values)"""


def run_settings(doc: runs.AdapterDoc) -> dict:
    """Every setting of a run that must be equal for runs to be pooled as seeds of one ratio: cmba.json's
    training hyper-parameters (all but the seed; every key the document holds), the training data (id,
    revision, split, size, limit, sample seed, columns), the base model, the budget, the mode, the targets, the
    alpha rule and quantization (a training hyper-parameter). Flat "section.key" names, JSON values."""
    base, alloc, data = doc.base_model, doc.allocation or runs.AllocationInfo(), doc.dataset or runs.DatasetInfo()
    out = {f"base_model.{k}": getattr(base, k) for k in ("id", "hub_id", "revision")}
    out.update({f"training.{k}": v for k, v in sorted((doc.training.to_dict() if doc.training else {}).items())
                if k not in _IGNORED_TRAINING})
    out.update({f"dataset.{k}": getattr(data, k) for k in ("id", "revision", "split", "size", "limit", "sample_seed",
                                                          "columns")})
    out.update({"allocation.budget": alloc.budget, "allocation.mode": alloc.mode,
                "allocation.alpha_rule": alloc.alpha_rule,
                "allocation.targets": {c: v.get("target_kind") for c, v in sorted((alloc.components or {}).items())}})
    return out


def fingerprint(settings: dict) -> str:
    """Short digest of `run_settings`: runs with the same fingerprint differ only in seed and allocation."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def settings_diff(a: dict, b: dict) -> dict[str, list]:
    """{setting: [value in a, value in b]} for every setting that differs."""
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


@dataclass(frozen=True)
class Group:
    """The runs (seeds) of one ratio with identical settings."""

    ratio: str
    adapters: list[str]
    seeds: list
    accuracies: list[float]
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None
    """mean ± 95% interval over seeds and questions; None with a single seed: no interval can be estimated from one run"""
    trainable_params: float
    ranks: str
    per_answer_type: dict[str, float]


@dataclass(frozen=True)
class Comparison:
    """Two-level bootstrap (seeds and questions) of one ratio against the baseline, in accuracy points."""

    ratio: str
    baseline: str
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    """raw two-sided p"""
    p_adjusted: float
    """Holm-adjusted over the K-1 comparisons with the baseline"""
    n_questions: int
    n_only_ratio: int
    n_only_baseline: int
    seeds: int
    baseline_seeds: int
    paired_seeds: bool
    df: float
    se: float
    seed_var: float | None
    question_var: float
    ci_simultaneous: tuple[float, float]
    """Bonferroni-adjusted interval (level 1 - 0.05/(K-1)): what the negative verdict reads"""
    question_var_fixed: float | None = None
    """the part of question_var that more seeds would not reduce (toolkit.evaluation.stats)"""
    n_clusters: int | None = None
    """images resampled at the question level (questions when no image ids were recorded)"""

    def __post_init__(self):
        if not 0.0 <= self.p_value <= 1.0 or not 0.0 <= self.p_adjusted <= 1.0:
            raise ValueError(f"p_value, p_adjusted: must be in [0, 1], got {self.p_value}, {self.p_adjusted}")

    @property
    def significant(self) -> bool:
        """significant after Holm's adjustment"""
        return self.p_adjusted < ALPHA


@dataclass(frozen=True)
class Verdict:
    label: str
    """positive | weak positive | negative | inconclusive"""
    reason: str
    ratio: str | None = None
    delta: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    seeds_needed: int | None = None
    """inconclusive: seeds per ratio to detect +MIN_EFFECT at 80% power, from the observed variances"""
    questions_needed: int | None = None
    """inconclusive: questions needed as well, when question sampling alone is too noisy"""

    def __post_init__(self):
        if self.label not in LABELS:
            raise ValueError(f"label: must be one of {', '.join(LABELS)}, got {self.label!r}")


LABELS = ("positive", "weak positive", "negative", "inconclusive")



def _stats(c: Comparison) -> str:
    return (f"{c.delta:+.2f} points (95% CI {c.ci_low:+.2f} to {c.ci_high:+.2f}, p = {c.p_value:.4f}, "
            f"Holm-adjusted p = {c.p_adjusted:.4f}; {c.seeds} vs {c.baseline_seeds} seeds, {c.n_questions} questions)")


def pooled_variances(comparisons) -> tuple[float, float, int, bool] | None:
    """(per-seed variance of a difference, question-level variance more seeds do not reduce, pooled degrees of
    freedom, paired) over the comparisons with at least 2 seeds: each estimate weighted by its degrees of
    freedom (the largest of several one-degree-of-freedom estimates is biased far upward), or None."""
    known = [c for c in comparisons if c.seed_var is not None]
    if not known:
        return None
    weights = [max(1, min(c.seeds, c.baseline_seeds) - 1) for c in known]
    seed_var = sum(w * c.seed_var for w, c in zip(weights, known)) / sum(weights)
    fixed = [c.question_var_fixed if c.question_var_fixed is not None else c.question_var for c in known]
    return seed_var, float(sum(fixed) / len(fixed)), sum(weights), all(c.paired_seeds for c in known)


def _inconclusive(why: str, comparisons: dict[str, Comparison], **kw) -> Verdict:
    """An inconclusive verdict with the seeds (and questions) needed to decide, from the pooled variances."""
    pooled = pooled_variances(comparisons.values())
    if pooled is None:
        return Verdict("inconclusive", f"{why}; the seed-to-seed variance needs at least 2 seeds per ratio "
                       "(paired by seed with the baseline) before the seeds needed can be estimated", **kw)
    seed_var, fixed, df, paired = pooled
    alpha = ALPHA / max(1, len(comparisons))  # Holm's first step, the strictest
    seeds = seeds_needed(seed_var=seed_var, question_var=fixed, effect=MIN_EFFECT, alpha=alpha, paired=paired)
    questions = None
    if seeds is None or seeds > 50:
        s_at = min(50, seeds or 50)
        n_questions = max(c.n_questions for c in comparisons.values())
        questions = questions_needed(question_var=fixed, n_questions=n_questions, seed_var=seed_var,
                                     seeds=s_at, effect=MIN_EFFECT, alpha=alpha)
        if questions is not None and questions <= n_questions:
            questions = None
    need = (f"about {seeds} seeds per ratio" if seeds is not None else "more seeds than is practical") + (
        f" and {questions:,} questions" if questions is not None else "")
    return Verdict("inconclusive", f"{why}; deciding a {MIN_EFFECT:g}-point difference at 80% power needs {need} "
                   f"(from the variances pooled over {len(comparisons)} comparison(s), {df} degrees of freedom: "
                   f"{seed_var:.2f} points² per seed, {fixed:.3f} from question sampling that seeds do not reduce, "
                   f"α = {alpha:.4f})", seeds_needed=seeds, questions_needed=questions, **kw)


def verdict(groups: list[Group], comparisons: dict[str, Comparison], baseline: str) -> Verdict:
    """The study's verdict by its success criterion (> +MIN_EFFECT points over the baseline), with its reason."""
    labels = [g.ratio for g in groups]
    if baseline not in labels:
        return Verdict("inconclusive", f"no evaluated adapter has the baseline ratio {baseline} "
                       f"(ratios here: {', '.join(labels)})")
    if len(groups) == 1:
        return Verdict("inconclusive", f"only the baseline ratio {baseline} was evaluated: nothing to compare")
    if not comparisons:
        return Verdict("inconclusive", f"no per-question predictions to pair the ratios with {baseline}")
    one_seed = sorted({c.ratio for c in comparisons.values() if c.seeds < 2}
                      | ({baseline} if any(c.baseline_seeds < 2 for c in comparisons.values()) else set()))
    if one_seed:
        return _inconclusive(f"one seed is never enough to decide (a single run of {', '.join(one_seed)}): "
                             "seed-to-seed variation cannot be estimated", comparisons)
    significant = [c for c in comparisons.values() if c.significant and c.delta > 0]
    strong = [c for c in significant if c.delta > MIN_EFFECT]
    if strong:
        c = max(strong, key=lambda c: c.delta)
        return Verdict("positive", f"{c.ratio} beats the baseline {baseline} by {_stats(c)}: more than "
                       f"{MIN_EFFECT:g} point and significant after Holm's adjustment over {len(comparisons)} "
                       "comparisons",
                       c.ratio, c.delta, c.p_value, c.p_adjusted)
    if significant:
        c = max(significant, key=lambda c: c.delta)
        return Verdict("weak positive", f"{c.ratio} beats the baseline {baseline} by {_stats(c)}: significant "
                       f"after Holm's adjustment, but the gain is not above {MIN_EFFECT:g} point",
                       c.ratio, c.delta, c.p_value, c.p_adjusted)
    best = max(comparisons.values(), key=lambda c: c.ci_simultaneous[1])
    if len(comparisons) == len(groups) - 1 and best.ci_simultaneous[1] < MIN_EFFECT:
        return Verdict("negative", f"no ratio beats the baseline {baseline} by {MIN_EFFECT:g} point: every ratio's "
                       f"simultaneous 95% CI upper bound is below +{MIN_EFFECT:g} (highest: {best.ratio}, "
                       f"{best.ci_simultaneous[1]:+.2f}); {best.ratio}: {_stats(best)}",
                       best.ratio, best.delta, best.p_value, best.p_adjusted)
    top = max(comparisons.values(), key=lambda c: c.delta)
    which = (f"highest: {top.ratio}, {_stats(top)}" if top.delta > 0 else
             f"no ratio measured above {baseline}; closest: {top.ratio}, {_stats(top)}")
    return _inconclusive(f"no ratio is significantly better than {baseline} after Holm's adjustment, and a gain of "
                         f"{MIN_EFFECT:g} point is not ruled out ({which})", comparisons,
                         ratio=top.ratio, delta=top.delta, p_value=top.p_value, p_adjusted=top.p_adjusted)


