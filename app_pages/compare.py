"""Compare evaluated adapters: stats by ratio (Holm-adjusted tests over seeds and questions), the study's
verdict with its reason, the base model alone, charts, and the adapter to publish."""

import streamlit as st
from streamlit.errors import StreamlitAPIException

from app_pages import study_ui
from app_pages.format_ui import readable
from toolkit.errors import CmbaError
from toolkit.evaluation import charts, compare, recommendation, tables
from toolkit.evaluation.verdict import fingerprint
from toolkit.queue.store import JobStore

VERDICT_BOX = {"positive": st.success, "weak positive": st.warning, "negative": st.info, "inconclusive": st.warning}
SAME = "(the same eval set)"


@st.cache_data(max_entries=16, show_spinner="Two-level bootstrap over seeds and questions...")
def cached_analysis(rows: list[dict], baseline: str, dataset: str, settings, select_on) -> compare.Analysis:
    return compare.analyze(rows, baseline=baseline, report_on=dataset, settings=settings, select_on=select_on)


@st.cache_data(max_entries=16, show_spinner="The study's recommendation (selection-adjusted intervals)...")
def cached_recommendation(rows: list[dict], eval_tag: str):
    return recommendation.recommend(rows, eval_tag=eval_tag)


st.title("Compare adapters")
store = compare.scan()
if not [r for r in store.rows if r["kind"] != "base"]:
    st.info(f"No evaluated adapters in {store.folder}: train and evaluate adapters first. Queue a sweep of ratios "
            "(several seeds each) on the Train & jobs page or from the CLI; the worker trains and then evaluates "
            "each adapter on the same eval set. An adapter trained by hand is evaluated with `evaluate`:")
    st.code(".venv/bin/python -m toolkit sweep --model demo --dataset synthetic:shapes --ratios 1:1:1,1:4:1,2:4:1 "
            "--seeds 3 --budget-rank 8\n.venv/bin/python -m toolkit evaluate --adapter adapters/<name> "
            "--dataset synthetic:shapes",
            language="bash")
    st.caption(store.summary())
    st.stop()

focus = st.session_state.pop("compare_focus", None) or {}  # "Open in Compare" on the jobs page
if focus.get("model") in compare.choices(store.rows, "base_model"):
    st.session_state["cmp_model"] = focus["model"]
c1, c2, c3, c4 = st.columns([1, 2, 1, 1])  # eval tags are long: the eval set gets the room
model = c1.selectbox("Base model", compare.choices(store.rows, "base_model"), key="cmp_model")
rows = compare.filter_rows(store.rows, model=model)
dataset = c2.selectbox("Eval set", compare.choices(rows, "eval_tag"), key="cmp_dataset")
rows = compare.filter_rows(rows, dataset=dataset)
budget = c3.selectbox("Budget", compare.choices(rows, "budget"), key="cmp_budget",
                      format_func=lambda b: f"{b:,} params" if isinstance(b, int) else str(b))
by_budget = compare.filter_rows(store.rows, model=model, budget=budget)
chosen = compare.filter_rows(by_budget, dataset=dataset)
prints = compare.choices([{**r, "fp": fingerprint(r.get("settings") or {})} for r in chosen], "fp")
settings = st.selectbox("Training settings (runs are pooled as seeds only with identical settings)", prints,
                        key="cmp_settings") if len(prints) > 1 else None
ratios = compare.choices(chosen, "ratio")
baseline = c4.selectbox("Baseline ratio", ratios, index=ratios.index("1:1:1") if "1:1:1" in ratios else 0,
                        key="cmp_baseline")
others = [t for t in compare.choices(by_budget, "eval_tag") if t != dataset]
select_on = st.selectbox("Choose the best adapter on", [SAME, *others], key="cmp_select_on",
                         help="Selecting and reporting on the same questions overstates the best adapter.")
try:
    a = cached_analysis(by_budget, baseline, dataset, settings, None if select_on == SAME else select_on)
except CmbaError as exc:
    st.error(str(exc))
    st.stop()

st.caption(store.summary())
running = [j for j in JobStore().list(states=("queued", "running"))
           if ((j.settings.get("train") or j.settings.get("evaluate") or {}).get("model")
               or (j.settings.get("evaluate") or {}).get("base")) == a.base_model]
if running:
    st.warning(f"**Provisional**: {len(running)} job(s) of {a.base_model} are still queued or running; the figures "
               "below can change when they finish, and publishing waits until then (the Study page follows them).")
VERDICT_BOX[a.verdict.label](f"**Verdict: {a.verdict.label}** — {a.verdict.reason}")
# the raw p-value is in the downloads; the page shows the Holm-adjusted one, so the table fits 1280 px
groups = tables.group_table(a).drop(columns=["p"]).rename(columns={"trainable params": "params",
                                                                   "Δ vs baseline": "Δ"})
st.dataframe(readable(groups, formats={"p (Holm)": "{:.4f}"}), hide_index=True, width="stretch")
if a.best:
    right = st.container(border=True)
    right.markdown(f"**Best adapter:** `{a.best['name']}`", help=a.best["path"])
    chosen_on = f" · chosen on {a.best['selected_on']}" if a.best.get("selected_on") else ""
    right.caption(f"ratio {a.best['ratio']} · seed {a.best['seed']} · {a.best['accuracy']:.2f}% · "
                  f"{a.best['trainable_params']:,} trainable params{chosen_on}"
                  + (f" · base model alone {a.base_reference:.2f}%" if a.base_reference is not None else ""))
    if a.below_base:
        right.warning(f"Every adapter scores below the base model alone ({a.base_reference:.2f}%): "
                      "none is worth publishing.")
    if right.button("Publish this adapter", type="secondary" if a.below_base else "primary", disabled=bool(running),
                    help="disabled while jobs of this model are unfinished" if running else None):
        st.session_state["publish_adapter"] = a.best["path"]
        try:
            st.switch_page("app_pages/publish.py")
        except StreamlitAPIException:
            right.info(f"The publish page is not available yet; the adapter is kept for it: {a.best['path']}")
for note in a.notes:  # runs kept apart (other settings, rung snapshots), single seeds, optimistic selection
    st.caption(f"note: {note}")

# what differs between the compared adapters (model, eval set and budget are one each; the CSV has every column)
adapters = tables.table(a.rows)
adapters["peak GiB"] = adapters["peak_memory_bytes"] / 2**30
adapters = adapters.drop(columns=["budget", "base_model", "dataset", "split", "eval_tag", "kind", "path", "n", "ranks",
                                  "peak_memory_bytes"]).rename(columns={"trainable_params": "params",
                                                                        "train_time_s": "train s"})
st.dataframe(readable(adapters), hide_index=True, width="stretch")
d1, d2 = st.columns(2)
d1.download_button("Download table (CSV)", tables.to_csv(a.rows), file_name="cmba_compare.csv", mime="text/csv")
d2.download_button("Download analysis (JSON)", tables.to_json(a), file_name="cmba_compare.json",
                   mime="application/json")

study_ui.retrieval_panel(a.rows + ([a.base_row] if a.base_row else []))
rec = cached_recommendation([r for r in by_budget if r["base_model"] == a.base_model], a.eval_tag)
if rec is not None:
    st.subheader("The study's answer")
    study_ui.recommendation_panel(rec, [w for w in JobStore().sweeps() if w["spec"].get("design") or w["spec"].get("search")])

acc_tab, pareto_tab, loss_tab, type_tab = st.tabs(
    ["Accuracy by ratio", "Accuracy vs parameters", "Loss curves", "Per answer type"])
acc_tab.altair_chart(charts.accuracy_chart(a), width="stretch")
acc_tab.caption("Dots: each seed's accuracy; tick: the ratio's mean; bar: its 95% interval over seeds and "
                "questions (none with one seed)"
                + ("; dashed line: the base model without an adapter" if a.base_row is not None else "") + ".")
trained = [r for r in rows if r["kind"] != "base"]
if len({r["budget"] for r in trained}) > 1:
    pareto_tab.altair_chart(charts.pareto_chart(trained), width="stretch")
    pareto_tab.caption("Every budget of this model and eval set; the dashed line is the Pareto front.")
else:  # budget-matched arms differ by a few parameters: an accuracy-vs-parameters front would mean nothing
    pareto_tab.info("Every adapter here has the same budget (the arms are matched within 0.5 %), so accuracy "
                    "against parameters has nothing to show: train another budget (a budgets axis in the sweep) "
                    "to see the trade-off.")
curves = compare.loss_curves(a.rows)
if curves.empty:
    loss_tab.info("No metrics.jsonl in these adapters.")
else:
    each = loss_tab.toggle("Each seed", key="cmp_loss_seeds", help="every seed's own curve, faint, over the band")
    loss_tab.altair_chart(charts.loss_band_chart(curves, seeds=each), width="stretch")
    loss_tab.caption("Mean training loss over seeds per ratio; the band spans the lowest to the highest seed.")
counts = charts.answer_type_counts(a)
type_tab.altair_chart(charts.answer_type_chart(a, counts), width="stretch")
if counts:
    type_tab.caption("Questions per answer type: " + ", ".join(f"{t} {n:,}" for t, n in sorted(counts.items())))
