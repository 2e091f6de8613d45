"""Budget calculator: a model, a budget and a v:p:l ratio -> per-module LoRA ranks and exact costs."""

import streamlit as st

from app_pages.calculator_ui import (
    PARAM_COLUMNS,
    budget_ui,
    cached_structure,
    model_picker_ui,
    options_ui,
    ratio_ui,
)
from app_pages.format_ui import compact_grid, compact_modules, excluded_markdown
from toolkit.calculator import report
from toolkit.calculator.checks import budget_flag, budget_problem
from toolkit.calculator.loraconfig import lora_config_json, lora_config_snippet, peft_trainable_count
from toolkit.calculator.settings import AllocationSettings
from toolkit.calculator.spec import Budget
from toolkit.errors import CmbaError

st.title("Budget calculator")
left, right = st.columns([1, 2], gap="large")
with left:
    model, patterns = model_picker_ui()
    kind, budget_text = budget_ui()
    ratio_text = ratio_ui()
try:
    if not model:
        raise CmbaError("model: choose a preset, or enter a Hub id or a local folder")
    structure = cached_structure(model, patterns)
    with left:
        options = options_ui(structure)
    mode = options["mode"]
    budget = Budget.parse(kind, budget_text)  # its own messages name the kind the page asks for
    settings = AllocationSettings(ratio=ratio_text, **{f"budget_{kind}": budget.value}, **options)
    spec, a = settings.spec, settings.allocation(structure)
except CmbaError as exc:
    right.error(str(exc))
    st.stop()

with right:
    st.caption(f"{structure.architecture} · family {structure.family} · {structure.total_params:,} parameters"
               + (f" · config of {structure.hub_id}" if structure.hub_id else ""))
    c1, c2, c3 = st.columns(3)
    c4 = st.container()  # the mean ranks (e.g. 13.8:27.6:6.91) get a row: next to three others they are cut
    c1.metric("Budget", f"{a.budget / 1e6:.2f} M", help=f"{a.budget:,} params ({a.budget_spec})")
    c2.metric("Allocated", f"{a.total / 1e6:.2f} M", help=f"{a.total:,} LoRA params")
    flag = budget_flag(a.budget_error)
    c3.metric("Budget error", f"{a.budget_error:+.2f}%", delta=flag or None, delta_color="inverse" if flag else "off")
    c4.metric("Mean ranks v:p:l", a.ranks_label(), help=f"{a.rounding} rounding; nominal ranks "
              + ":".join(str(r) for r in a.ranks()))
    if flag:
        st.error(budget_problem(a))
    for w in a.warnings:
        st.warning(w)
    # hand the allocation to the launch form (plain keys survive page switches; widget keys do not)
    st.session_state["launch"] = {"model": model, "patterns": patterns, "budget_kind": kind,
                                  "budget_value": budget_text, "ratio": ratio_text, "mode": mode}
    st.page_link("app_pages/jobs.py", label="Train this allocation: launch a sweep", icon=":material/model_training:")
    st.altair_chart(report.split_chart(a), width="stretch")

# tables below, at the page's full width: they have many columns
st.dataframe(report.component_table(a), width="stretch", column_config=PARAM_COLUMNS)
grid_tab, audit_tab, config_tab, detail_tab = st.tabs(
    ["Canonical ratios", "Audit hand-picked ranks", "LoraConfig", "Per-module detail"])
with grid_tab:
    grid = report.ratio_grid(structure, spec)
    st.dataframe(compact_grid(grid), hide_index=True, width="stretch", column_config=PARAM_COLUMNS)
    st.caption(f"{spec.rounding} rounding; ranks are the nominal ones, mean ranks what each component gets")
    for level, text in report.grid_notes(grid):
        (st.error if level == "error" else st.warning)(text)
    st.altair_chart(report.ratio_grid_chart(grid), width="stretch")
with audit_tab:
    tuples = st.text_input("Hand-picked ranks v:p:l (comma-separated)", value="4:16:4, 8:8:8, 2:8:2", key="audit")
    try:
        st.dataframe(report.audit_table(structure, spec, report.parse_rank_tuples(tuples)), hide_index=True,
                     width="stretch", column_config=PARAM_COLUMNS)
    except CmbaError as exc:
        st.error(str(exc))
with config_tab:
    if st.button("Confirm with PEFT", help="get_peft_model on the model built on the meta device"):
        count = peft_trainable_count(structure, a)
        (st.success if count == a.total else st.error)(f"PEFT counts {count:,} trainable parameters "
                                                       f"(calculator: {a.total:,})")
    st.download_button("Download LoraConfig JSON", lora_config_json(a), file_name="cmba_lora_config.json",
                       mime="application/json")
    st.caption(f"{sum(not m.full for m in a.modules):,} target modules, in natural order (layers 2 before 10); "
               "the JSON download holds the same config")
    st.code(lora_config_snippet(a), language="python", height=480, wrap_lines=True)  # scrolls: 7B models: ~360 modules
with detail_tab:
    st.dataframe(compact_modules(report.module_table(a)), hide_index=True, width="stretch",
                 column_config=PARAM_COLUMNS)
    st.caption(f"Excluded from the budget: {len(structure.excluded)} Linear layers")
    st.markdown(excluded_markdown(report.excluded_table(structure)))
