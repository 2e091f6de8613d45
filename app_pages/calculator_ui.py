"""Widget helpers of the calculator page: each draws its inputs and returns plain values."""

from __future__ import annotations

import streamlit as st

from app_pages.settings_ui import setting_input
from toolkit.calculator.architectures import COMPONENTS, ComponentPatterns
from toolkit.calculator.settings import AllocationSettings
from toolkit.calculator.spec import KINDS, Ratio, Targets
from toolkit.calculator.structure import load_structure, presets
from toolkit.errors import CmbaError
from toolkit.fields import settings_field

BUDGET_LABELS = {"rank": "Uniform rank equivalent", "params": "Parameters", "percent": "% of base model"}
BUDGET_DEFAULTS = {"rank": "8", "params": "20000000", "percent": "0.3"}


@st.cache_resource(max_entries=8, show_spinner="Reading the model's config and building it on the meta device...")
def cached_structure(model: str, patterns: str | None):
    """Built once per (model, patterns): changing the ratio or budget never rebuilds the model."""
    return load_structure(model, patterns=ComponentPatterns.parse(patterns) if patterns else None)


def _short(description: str, limit: int = 48) -> str:
    """A preset's description up to its first ':' or '(' (and at most `limit` characters), for the option list."""
    head = description.split(":")[0].split(" (")[0].strip()
    return head if len(head) <= limit else head[:limit - 1].rstrip() + "…"


def model_picker_ui() -> tuple[str, str | None]:
    source = st.radio("Model source", ["Preset", "Hub id", "Local folder"], horizontal=True, key="model_source")
    table = presets()
    if source == "Preset":
        names = list(table)
        model = st.selectbox("Model", names, index=names.index("llava-1.5-7b"), key="preset",
                             format_func=lambda n: f"{n} — {_short(table[n]['description'])}")
        st.caption(table[model]["description"])  # in full: the options show its first words, so none is cut
    elif source == "Hub id":
        model = st.text_input("Hub id", placeholder="llava-hf/llava-1.5-7b-hf", key="hub_id",
                              help="Only config.json is fetched (needs network).")
    else:
        model = st.text_input("Local folder with config.json", placeholder="/path/to/model", key="local_dir")
    with st.expander("Component patterns (unknown architectures)"):
        patterns = st.text_input("Patterns", key="patterns", placeholder="vision=RE;projector=RE;language=RE",
                                 help="Regexes for module-path prefixes; leave empty to use the registry.")
    return model.strip(), (patterns.strip() or None)


def _numbers_to_text():
    s = st.session_state
    numbers = (s.ratio_v, s.ratio_p, s.ratio_l)
    if None not in numbers:  # a box left empty keeps the text as it is
        s.ratio_text = ":".join(f"{n:g}" for n in numbers)


def _text_to_numbers():
    try:
        vision, projector, language = Ratio.parse(st.session_state.ratio_text).as_tuple()
    except CmbaError:  # the page shows the parse error; the boxes show no stale numbers meanwhile
        st.session_state.update(ratio_v=None, ratio_p=None, ratio_l=None)
        return
    st.session_state.update(ratio_v=vision, ratio_p=projector, ratio_l=language)


def ratio_ui() -> str:
    """Three number inputs and a free-text box kept in sync; returns the text (parsed by the page)."""
    st.session_state.setdefault("ratio_text", "1:4:1")
    if "ratio_v" not in st.session_state:
        _text_to_numbers()
    st.text_input("Ratio vision : projector : language", key="ratio_text", on_change=_text_to_numbers,
                  help="e.g. 1:4:1 or 2:4:1; 0 leaves a component out")
    cols = st.columns(3)
    for col, comp, key in zip(cols, COMPONENTS, ("ratio_v", "ratio_p", "ratio_l")):
        col.number_input(comp, min_value=0.0, value=None, step=1.0, key=key, on_change=_numbers_to_text,
                         placeholder="?")
    return st.session_state.ratio_text


def budget_ui() -> tuple[str, str]:
    kind = st.radio("Budget as", list(BUDGET_LABELS), format_func=BUDGET_LABELS.get, horizontal=True,
                    key="budget_kind")
    value = st.text_input(BUDGET_LABELS[kind], value=BUDGET_DEFAULTS[kind], key=f"budget_{kind}")
    return kind, value


def options_ui(structure) -> dict:
    """The allocation's options as {AllocationSettings field: value}: widgets generated from the fields, but the
    targets, whose choices depend on the model (the kinds of module each component has)."""
    out = {"mode": setting_input(AllocationSettings, "mode", label="Mode", key="mode"),
           "rounding": setting_input(AllocationSettings, "rounding", label="Rounding", key="rounding")}
    out["full_finetune"] = st.multiselect("Fully fine-tune", list(COMPONENTS), key="full_finetune",
                                          help=settings_field(AllocationSettings, "full_finetune").doc)
    with st.expander("Targets and alpha"):
        targets = {}
        for col, comp in zip(st.columns(3), COMPONENTS):
            kinds = [k for k in KINDS if k in structure.kinds_available(comp)]
            targets[comp] = col.selectbox(f"{comp} modules", kinds, key=f"targets_{comp}")
        out["targets"] = Targets(**targets)
        a, b = st.columns(2)
        out["alpha_rule"] = setting_input(AllocationSettings, "alpha_rule", label="Alpha rule", key="alpha_rule", where=a)
        out["alpha_value"] = setting_input(AllocationSettings, "alpha_value", label="k (scaled) or alpha (fixed, rslora)",
                                           key="alpha_value", where=b)
    return out


# Parameter counts with thousands separators in every table of the page.
PARAM_COLUMNS = {
    name: st.column_config.NumberColumn(format="localized")
    for name in ["LoRA params", "total", "params"] + [f"{c} params" for c in COMPONENTS]
}
