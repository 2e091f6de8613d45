"""Tables (pandas) and charts (Altair) of allocations, for the app and notebooks. Pure: no Streamlit.

    >>> a = allocate(load_structure("llava-1.5-7b"), AllocationSpec(ratio=Ratio.parse("1:4:1"), budget=Budget("rank", 8)))
    >>> component_table(a)            # rank, alpha, modules, params, share of budget vs share of model
    >>> split_chart(a)                # the "disproportion": budget split next to model-size split
    >>> ratio_grid(structure, spec)   # the study's canonical ratios at the same budget
"""

from __future__ import annotations

from dataclasses import replace

import altair as alt
import pandas as pd

from toolkit.calculator.allocation import Allocation, allocate, audit
from toolkit.calculator.architectures import COMPONENTS
from toolkit.calculator.checks import budget_flag
from toolkit.calculator.spec import AllocationSpec, Ratio
from toolkit.calculator.structure import ModelStructure
from toolkit.errors import CmbaError

CANONICAL_RATIOS = ("1:1:1", "1:2:1", "1:4:1", "2:1:1", "1:1:2", "2:4:1")
COLORS = alt.Scale(domain=list(COMPONENTS), range=["#4c78a8", "#f58518", "#54a24b"])


def component_table(a: Allocation) -> pd.DataFrame:
    rows = []
    for c in COMPONENTS:
        x = a.components[c]
        rows.append({
            "component": c,
            "rank": "full" if x.full else x.rank,
            "mean rank": round(x.mean_rank, 3),
            "alpha": x.alpha,
            "modules": x.modules,
            "capped": x.capped_modules,
            "LoRA params": x.params,
            "budget %": round(100 * x.share_of_budget, 2),
            "model %": round(100 * x.share_of_model, 2),
            # the study's "disproportion": > 1 means more of the budget than of the model
            "budget/model": round(x.share_of_budget / x.share_of_model, 2) if x.share_of_model else None,
        })
    return pd.DataFrame(rows).set_index("component")


def module_table(a: Allocation) -> pd.DataFrame:
    return pd.DataFrame([
        {"module": m.name, "component": m.component, "kind": m.kind, "in": m.in_features, "out": m.out_features,
         "rank": m.rank, "alpha": m.alpha, "LoRA params": m.params, "capped": m.capped,
         "full training cheaper": m.full_cheaper}
        for m in a.modules
    ])


def excluded_table(structure: ModelStructure) -> pd.DataFrame:
    return pd.DataFrame([
        {"module": m.name, "in": m.in_features, "out": m.out_features, "why excluded": m.excluded_reason}
        for m in structure.excluded
    ])


def split_chart(a: Allocation) -> alt.Chart:
    """Share of the LoRA budget next to share of the model's parameters, per component."""
    data = pd.DataFrame(
        [{"component": c, "split": "LoRA budget", "share %": 100 * a.components[c].share_of_budget} for c in COMPONENTS]
        + [{"component": c, "split": "model size", "share %": 100 * a.components[c].share_of_model} for c in COMPONENTS]
    )
    base = alt.Chart(data).encode(
        x=alt.X("component:N", sort=list(COMPONENTS), title=None),
        xOffset=alt.XOffset("split:N"),
        y=alt.Y("share %:Q", title="share (%)"),
        color=alt.Color("split:N", scale=alt.Scale(range=["#f58518", "#9ecae9"]), title=None),
        tooltip=["component", "split", alt.Tooltip("share %:Q", format=".2f")],
    )
    labels = base.mark_text(dy=-6).encode(text=alt.Text("share %:Q", format=".1f"))
    return (base.mark_bar() + labels).properties(height=260, title="Share of the LoRA budget vs share of the model")


def ratio_grid(structure: ModelStructure, spec: AllocationSpec, ratios=CANONICAL_RATIOS) -> pd.DataFrame:
    """The same budget solved for each ratio (a ratio the budget cannot meet shows its error).

    `budget flag` is non-empty where |budget error| exceeds the study tolerance (sweeps refuse those arms);
    `same as` names an earlier ratio whose allocation came out identical (caps can merge arms).
    """
    rows = []
    seen: dict[tuple, str] = {}
    for text in ratios:
        row = {"ratio": text}
        try:
            a = allocate(structure, replace(spec, ratio=Ratio.parse(text)))
        except CmbaError as exc:
            row["note"] = str(exc)
            rows.append(row)
            continue
        for c in COMPONENTS:
            row[f"{c} rank"] = a.components[c].rank
        for c in COMPONENTS:
            row[f"{c} mean rank"] = round(a.components[c].mean_rank, 3)
        row.update({"budget error %": round(a.budget_error, 2), "budget flag": budget_flag(a.budget_error),
                    "rounding": a.rounding, "total": a.total, "same as": seen.get(a.signature(), "")})
        seen.setdefault(a.signature(), text)
        for c in COMPONENTS:
            row[f"{c} params"] = a.components[c].params
        row["note"] = "; ".join(w for w in a.warnings if w.startswith(COMPONENTS))
        rows.append(row)
    return pd.DataFrame(rows)


def grid_notes(grid: pd.DataFrame) -> list[tuple[str, str]]:
    """(level, text) for the grid's visible flags: 'error' beyond the budget tolerance, 'warning' for arms
    that came out identical to an earlier ratio."""
    out = []
    for row in grid.to_dict("records"):
        if row.get("budget flag"):
            out.append(("error", f"ratio {row['ratio']}: budget error {row['budget error %']:+.2f}% is {row['budget flag']}"
                                 " (the study tolerance; sweeps refuse this arm)"))
        if row.get("same as"):
            out.append(("warning", f"ratio {row['ratio']} gives the same allocation as {row['same as']} (caps); a "
                                   "sweep queues it once"))
    return out


def ratio_grid_chart(grid: pd.DataFrame) -> alt.Chart:
    long = grid.dropna(subset=["total"]).melt(
        id_vars=["ratio"], value_vars=[f"{c} params" for c in COMPONENTS], var_name="component", value_name="params"
    )
    long["component"] = long["component"].str.replace(" params", "", regex=False)
    return alt.Chart(long).mark_bar().encode(
        y=alt.Y("ratio:N", sort=list(grid["ratio"]), title="ratio v:p:l"),
        x=alt.X("params:Q", stack="zero", title="LoRA parameters"),
        color=alt.Color("component:N", scale=COLORS, sort=list(COMPONENTS)),
        tooltip=["ratio", "component", alt.Tooltip("params:Q", format=",")],
    ).properties(height=260, title="Canonical ratios at the same budget")


def parse_rank_tuples(text: str) -> list[tuple[int, int, int]]:
    """'4:16:4, 8:8:8' -> [(4, 16, 4), (8, 8, 8)] (whole ranks >= 0)."""
    from toolkit.calculator.spec import parse_ranks
    from toolkit.errors import InputError

    out = [parse_ranks(chunk) for chunk in filter(None, (c.strip() for c in text.replace(";", ",").split(",")))]
    if not out:
        raise InputError("ranks: give at least one V:P:L rank tuple such as 4:16:4")
    return out


def audit_table(structure: ModelStructure, spec: AllocationSpec, tuples: list[tuple[int, int, int]]) -> pd.DataFrame:
    """What hand-picked rank tuples cost against the budget, next to the budget-matched ranks of their ratio."""
    rows = []
    for ranks in tuples:
        a = audit(structure, ranks, budget=spec.budget, targets=spec.targets, alpha=spec.alpha)
        row = {"hand-picked": ":".join(map(str, ranks)), "params": a.total,
               "% of budget": round(100 * a.total / a.budget, 1), "budget error %": round(a.budget_error, 2)}
        try:
            matched = allocate(structure, replace(spec, ratio=Ratio(*map(float, ranks)), mode="rank"))
            row["budget-matched ranks"] = ":".join(str(r) for r in matched.ranks())
            row["budget-matched mean ranks"] = matched.ranks_label()
            row["matched error %"] = round(matched.budget_error, 2)
        except CmbaError as exc:
            row["budget-matched ranks"] = f"n/a ({exc})"
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = [
    "CANONICAL_RATIOS", "audit_table", "component_table", "excluded_table", "grid_notes",
    "module_table", "parse_rank_tuples", "ratio_grid", "ratio_grid_chart", "split_chart",
]
