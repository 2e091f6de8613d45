"""Tables and exports of a comparison: the adapter table, the per-ratio table, JSON and CSV.

    >>> a = compare.analyze(compare.scan().rows)
    >>> tables.group_table(a)        # what the Compare page and `compare` print
    >>> tables.to_json(a)            # `compare --json`

`toolkit.evaluation.compare` computes the `Analysis`; this module only lays it out.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from toolkit.errors import InputError

if TYPE_CHECKING:
    from toolkit.evaluation.compare import Analysis

_COLUMNS = ["name", "ratio", "seed", "accuracy", "ranks", "trainable_params", "budget", "base_model", "dataset",
            "split", "n", "eval_tag", "train_time_s", "peak_memory_bytes", "kind", "path"]
"""the columns of the adapter table (then one accuracy column per answer type)"""

def table(rows: list[dict]) -> pd.DataFrame:
    """One line per evaluated adapter, with one `acc <answer type>` column per answer type."""
    types = sorted({t for r in rows for t in r["per_answer_type"]})
    return pd.DataFrame([{**{k: r.get(k) for k in _COLUMNS},
                          **{f"acc {t}": r["per_answer_type"].get(t) for t in types}}
                         for r in rows], columns=_COLUMNS + [f"acc {t}" for t in types])


def group_table(a: Analysis) -> pd.DataFrame:
    """One line per ratio (mean ± 95% interval over seeds and questions, Δ vs baseline, raw and Holm-adjusted p), and the
    base model without adapter as a last line when it was evaluated."""
    cmp = {c.ratio: c for c in a.comparisons}
    out = []
    for g in a.groups:
        c = cmp.get(g.ratio)
        label = f"{g.ratio} (baseline)" if g.ratio == a.baseline else g.ratio
        out.append({"ratio": label, "seeds": len(g.seeds), "mean": round(g.mean, 2),
                    "95% CI": ci_text(g),
                    "std": None if g.std is None else round(g.std, 2), "ranks": g.ranks,
                    "trainable params": round(g.trainable_params),
                    "Δ vs baseline": 0.0 if g.ratio == a.baseline else (None if c is None else round(c.delta, 2)),
                    "Δ 95% CI": None if c is None else f"{c.ci_low:+.2f} – {c.ci_high:+.2f}",
                    "p": None if c is None else round(c.p_value, 4),
                    "p (Holm)": None if c is None else round(c.p_adjusted, 4)})
    if a.base_row is not None:
        ref = a.base_reference
        out.append({"ratio": "base model (no adapter)", "seeds": 1, "mean": round(ref, 2), "95% CI": "n/a",
                    "std": None, "ranks": "", "trainable params": 0, "Δ vs baseline": None, "Δ 95% CI": None,
                    "p": None, "p (Holm)": None})
    return pd.DataFrame(out)


def ci_text(g) -> str:
    """A group's 95% interval in words a reader cannot misread: "n/a (1 seed)"; an interval the accuracy scale cuts
    (the t-interval of a few seeds that disagree reaches past 0 or 100 %) says so, and one cut at both ends says
    that the seeds cannot bound the mean at all, instead of showing "0.00 – 100.00" as if it were a finding."""
    if g.ci_low is None:
        return "n/a (1 seed)"
    low, high = g.ci_low <= 0.0 < g.mean, g.ci_high >= 100.0 > g.mean
    if low and high:
        spread = max(g.accuracies) - min(g.accuracies)
        return f"uninformative: {len(g.accuracies)} seeds {spread:.2f} points apart; add seeds"
    text = f"{g.ci_low:.2f} – {g.ci_high:.2f}"
    return text + (" (cut at 0)" if low else " (cut at 100)" if high else "")


def comparison_table(a: Analysis) -> pd.DataFrame:
    return pd.DataFrame([{**asdict(c), "significant": c.significant} for c in a.comparisons])


def _finite(value):
    """JSON has no inf/NaN: undefined values become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def to_dict(a: Analysis) -> dict:
    """Everything the analysis found, JSON-ready (no NaN or inf: undefined values are null)."""
    return _finite({
        "base_model": a.base_model, "eval_tag": a.eval_tag, "budget": a.budget, "baseline": a.baseline,
        "verdict": asdict(a.verdict), "best": a.best, "pareto": a.pareto, "base_reference": a.base_reference,
        "base_row": a.base_row, "below_base": a.below_base, "selection": a.selection,
        "settings": a.settings, "kept_apart": a.kept_apart,
        "groups": [asdict(g) for g in a.groups],
        "comparisons": [{**asdict(c), "significant": c.significant} for c in a.comparisons],
        "rows": a.rows, "notes": a.notes,
    })


def to_json(a: Analysis) -> str:
    return json.dumps(to_dict(a), indent=2)


def to_csv(rows: list[dict], path=None) -> str:
    """The adapter table as CSV text; also written to `path` when given."""
    text = table(rows).to_csv(index=False)
    if path is not None:
        try:
            Path(path).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"csv: cannot write '{path}' ({exc.strerror})") from None
    return text


# ------------------------------------------------------------------------------------------ loss curves
