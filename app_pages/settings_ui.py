"""Form widgets generated from the settings tree (toolkit/fields.py): a field's type picks the widget, its bounds,
choices, default and doc string fill it in, so a form cannot drift from what `train` and `allocate` accept.

    mode = setting_input(TrainSettings, "mode", label="Mode", key="jobs_mode")          # a radio of rank, share
    steps = setting_input(TrainSettings, "max_steps", label="Steps", key="jobs_steps")  # 1 .. 10^8
"""

from __future__ import annotations

import streamlit as st

from toolkit.fields import Setting, settings_field


def number_bounds(f: Setting) -> tuple[int | float | None, int | float | None]:
    """(min, max) a number input allows for field `f`: its bounds, closed for whole numbers."""
    lo, hi = f.lower, f.upper
    if f.kind == "int":
        lo = None if lo is None else int(lo) + (1 if f.lower_open else 0)
        hi = None if hi is None else int(hi) - (1 if f.upper_open else 0)
    return lo, hi


def help_text(f: Setting) -> str:
    return f.doc + (f" ({f.allowed})" if f.kind in ("int", "float") and f.lower is not None else "")


def setting_input(cls, name: str, *, label: str, key: str, where=st, horizontal: bool = True, **kwargs):
    """The widget of field `name` of settings class `cls`; returns its value (text where the field takes text)."""
    f = settings_field(cls, name)
    kwargs.setdefault("help", help_text(f))
    if f.kind == "choice":
        return where.radio(label, list(f.choices), key=key, horizontal=horizontal, **kwargs)
    if f.kind == "bool":
        return where.checkbox(label, key=key, **kwargs)
    if f.kind == "int":
        lo, hi = number_bounds(f)
        return where.number_input(label, min_value=lo, max_value=hi, step=1, key=key, **kwargs)
    if key not in st.session_state and f.default not in (None, [], {}):
        st.session_state[key] = f"{f.default:g}" if isinstance(f.default, float) else str(f.default)
    return where.text_input(label, key=key, **kwargs)  # floats as text: 2e-4 reads better than 0.0002
