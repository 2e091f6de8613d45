"""Display helpers shared by the pages: tables a reader can scan (thousands separators, no 'None' cells)."""

import pandas as pd

MISSING = "–"


def _text(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return MISSING
    return fmt.format(value) if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def readable(df: pd.DataFrame, *, precision: int = 2, formats: dict[str, str] | None = None):
    """A Styler for `st.dataframe`: numbers with thousands separators and `precision` decimals (or the column's
    `formats` entry, e.g. {"p": "{:.4f}"}), missing values as a dash. Columns without a missing value keep
    their types, so they still sort as numbers; a column with one is shown as text (Streamlit draws a missing
    number as "None" whatever the Styler says)."""
    formats = formats or {}
    out = df.copy()
    for col in out.columns:
        fmt = formats.get(col, f"{{:,.{precision}f}}" if out[col].dtype.kind == "f" else "{:,}")
        if out[col].isna().any() or col in formats:
            out[col] = [_text(v, fmt) for v in out[col]]
    return out.style.format(precision=precision, thousands=",")


def compact_grid(grid: pd.DataFrame) -> pd.DataFrame:
    """The calculator's canonical-ratio grid with each component triple in one column (ranks v:p:l, mean
    ranks v:p:l), so it fits the page without a horizontal scroll."""
    out = grid.copy()
    comps = ("vision", "projector", "language")
    out.insert(1, "ranks v:p:l", [":".join(str(r[f"{c} rank"]) for c in comps) for _, r in grid.iterrows()])
    out.insert(2, "mean ranks v:p:l", [":".join(f"{r[f'{c} mean rank']:.3g}" for c in comps) for _, r in grid.iterrows()])
    drop = [f"{c} rank" for c in comps] + [f"{c} mean rank" for c in comps] + ["rounding"]
    drop += [c for c in ("budget flag", "same as", "note") if c in out.columns and not out[c].astype(bool).any()]
    return out.drop(columns=[c for c in drop if c in out.columns])


def _shape(df: pd.DataFrame) -> list[str]:
    return [f"{i:,} → {o:,}" for i, o in zip(df["in"], df["out"], strict=True)]


def compact_modules(table: pd.DataFrame) -> pd.DataFrame:
    """The per-module table with in/out as one "in → out" column and the two flags as one note."""
    out = table.copy()
    out.insert(3, "in → out", _shape(table))
    notes = ["; ".join(n for n, on in (("capped", c), ("full training cheaper", f)) if on)
             for c, f in zip(table["capped"], table["full training cheaper"], strict=True)]
    if any(notes):
        out["note"] = notes
    return out.drop(columns=["in", "out", "capped", "full training cheaper"])


def excluded_markdown(table: pd.DataFrame) -> str:
    """The excluded modules grouped by reason, as a markdown list that wraps (a reason is a sentence)."""
    groups: dict[str, list[str]] = {}
    for module, i, o, why in table[["module", "in", "out", "why excluded"]].itertuples(index=False):
        groups.setdefault(why, []).append(f"`{module}` ({i:,} → {o:,})")
    return "\n".join(f"- **{why}**: {', '.join(mods)}" for why, mods in groups.items())
