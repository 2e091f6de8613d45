"""The halving rule, shared by the job-based search (toolkit.study.halving) and the search inside a pack
(toolkit.study.packsearch): which arms a rung keeps, a rung's record entry, an evaluated run folder's score.

    decide({"1:1:1": [60.1, 61.0], "0:0:1": [40.2, 41.0]}, eta=2)     # -> [Decision(arm, keep, reason), ...]
    folder_score(run_folder)                                          # (accuracy %, its SE over questions)
    rung_entry(scores, question_se, search=search, rung=1)            # what halving.status reads of a rung
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from toolkit import runs
from toolkit.study.search import Z_DEFAULT, Search


@dataclass(frozen=True)
class Decision:
    arm: str
    mean: float
    se: float
    seeds: int
    keep: bool
    reason: str


def _se(accuracies: list[float], question_se: float | None) -> float:
    seed_se = float(np.std(accuracies, ddof=1) / math.sqrt(len(accuracies))) if len(accuracies) > 1 else 0.0
    return max(seed_se, question_se or 0.0)


def decide(scores: dict[str, list[float]], *, eta: float = 2.0, z: float = Z_DEFAULT,
           question_se: dict[str, float] | None = None, reference: str | None = "1:1:1") -> list[Decision]:
    """Keep/drop each arm from its per-seed accuracies (%), best first.

    The top ceil(n / eta) arms by mean are kept; another arm is dropped only when the weakest kept arm's mean
    exceeds its own by more than `z`·sqrt(se_arm² + se_cut²), else it is kept as within noise. `question_se`
    ({arm: standard error of its mean over questions}) bounds each standard error from below, so two seeds
    that happen to agree do not make an arm look certain. The `reference` arm (1:1:1) is always kept: every
    ratio is compared with it at the last rung.
    """
    if not scores:
        return []
    question_se = question_se or {}
    stats = {a: (float(np.mean(v)), _se(list(v), question_se.get(a)), len(v)) for a, v in scores.items() if v}
    order = sorted(stats, key=lambda a: (-stats[a][0], a))
    n_keep = max(1, math.ceil(len(order) / eta))
    cut = order[n_keep - 1]
    cut_mean, cut_se, _ = stats[cut]
    out = []
    for i, arm in enumerate(order):
        mean, se, n = stats[arm]
        if i < n_keep:
            out.append(Decision(arm, mean, se, n, True, f"in the top {n_keep} of {len(order)}"))
            continue
        if arm == reference:
            out.append(Decision(arm, mean, se, n, True, "the reference every ratio is compared with (always kept)"))
            continue
        gap, noise = cut_mean - mean, z * math.sqrt(se ** 2 + cut_se ** 2)
        if gap > noise:
            out.append(Decision(arm, mean, se, n, False, f"behind {cut} by {gap:.2f} points, more than its noise "
                                                         f"({noise:.2f} = {z:g} SE)"))
        else:
            out.append(Decision(arm, mean, se, n, True, f"within noise of {cut} ({gap:.2f} <= {noise:.2f} points)"))
    return out


def folder_score(folder) -> tuple[float, float | None] | None:
    """(overall accuracy %, its standard error over questions) of a run folder's first evaluation, or None."""
    tags = runs.evaluations(folder)
    if not tags:
        return None
    result = runs.read_evaluation(folder, tags[0])
    preds = runs.read_predictions(folder, tags[0]) or []
    accs = [100.0 * p.accuracy for p in preds if p.accuracy is not None]
    qse = float(np.std(accs, ddof=1) / math.sqrt(len(accs))) if len(accs) > 1 else None
    return float(result.scores["overall"]), qse


def pooled(scores: dict[str, list[float]], qse: dict[str, list[float]]) -> dict[str, float]:
    """The question-level standard error of each arm's mean over its seeds' evaluations."""
    return {a: float(np.mean(v)) / math.sqrt(len(v)) for a, v in qse.items() if v}


def rung_entry(scores: dict[str, list[float]], qse: dict[str, float], *, search: Search, rung: int,
               missing: dict[str, str] | None = None) -> dict:
    """The record of one rung's decision (what `status` reads): rung, steps, final, decisions, failed."""
    last = rung == len(search.rungs)
    decisions = decide(scores, eta=search.eta, z=search.z, question_se=qse)
    return {"rung": rung, "steps": search.rungs[rung - 1], "final": last,
            "decisions": [{**asdict(d), "keep": d.keep and not last} for d in decisions],
            "failed": [{"arm": a, "reason": r} for a, r in (missing or {}).items() if a not in scores]}
