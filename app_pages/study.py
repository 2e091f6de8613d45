"""One study followed in one place: its design and plan, its progress (time left behind the queue ahead), each
rung of a search, the loss per ratio, the recommendation, the confirmation and the final answer. Provisional, with
publishing disabled, while any job of the study or its confirmation is unfinished (toolkit.study.report)."""

from dataclasses import asdict

import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitAPIException

from app_pages import study_ui
from app_pages.jobs_panel import NO_FADE, measured
from toolkit.errors import CmbaError
from toolkit.evaluation import charts
from toolkit.queue.lifecycle import live_workers
from toolkit.queue.store import JobStore
from toolkit.queue.worker import slots_here
from toolkit.study import progress, report
from toolkit.study.confirm import confirmation_state, sweep_recommendation, sweep_rows

s = st.session_state
st.title("Study")
store = JobStore()
found = report.studies(store)
if not found:
    st.info("No study yet. A study is a sweep of ratios x seeds (or a designed study over the simplex) queued on the "
            "Train & jobs page or with `sweep`; this page then follows it to its confirmed answer.")
    st.code(".venv/bin/python -m toolkit sweep --model demo-projector --dataset synthetic:shapes "
            "--ratios 1:1:1,1:4:1,4:1:1,1:1:4 --seeds 5 --budget-rank 2", language="bash")
    st.stop()


def _label(w: dict) -> str:
    """What the study is (its live counts are below it: a label read once per page run would keep stale ones)."""
    spec = w["spec"]
    what = spec.get("design") or f"{len(spec.get('ratios') or [])} ratios"
    return f"{w['id'][:8]} · {spec.get('name') or spec.get('model')} · {what} · {len(spec.get('seeds') or [])} seed(s)"


ids = [w["id"] for w in found]
labels = {w["id"]: _label(w) for w in found}
focus = s.pop("study_focus", None)
if focus in ids:
    s["study_sweep"] = focus
if s.get("study_sweep") not in ids:
    s["study_sweep"] = ids[0]
# the labels carry live counts: they are read once per page run, not in the 2-s fragment, so the open
# dropdown is never rebuilt under the pointer (the jobs page's picker lost clicks that way)
sweep = st.selectbox("Study", ids, key="study_sweep", format_func=labels.get)


@st.cache_data(max_entries=8, show_spinner="The study's recommendation and its confirmation...")
def answer(sweep_id: str, state: tuple):
    """(Recommendation | None, its error, the confirmation's outcome | None, the confirmation's best adapter of
    its ratio | None) for `sweep_id`, computed again only when a job of the study or its confirmation changes
    state (`state` is their counts): the 2-s refresh reads no adapter folder."""
    del state
    jobs = JobStore()
    try:
        rec = sweep_recommendation(jobs, sweep_id)
    except CmbaError as exc:
        return None, str(exc), None, None
    confirmations = report.confirmation_sweeps(jobs, sweep_id)
    if not confirmations:
        return rec, None, None, None
    conf = confirmation_state(jobs, sweep_id, confirmations[-1])
    rows = [r for r in sweep_rows(jobs, confirmations[-1]) if r["kind"] != "base"
            and r["ratio"] == (conf or {}).get("ratio")]
    return rec, None, conf, max(rows, key=lambda r: r["accuracy"], default=None)


@st.fragment(run_every=2)
def live(sweep_id: str) -> None:
    st.markdown(NO_FADE, unsafe_allow_html=True)  # the 2-s refresh must not grey out what the user reads
    workers = live_workers(store)
    rep = report.study_report(store, sweep_id, recommend=False, history=measured(), slots=slots_here(workers))
    p, d = rep["progress"], rep["design"]
    rec, error, conf, best = answer(sweep_id, tuple(sorted(p["counts"].items())))
    rep.update(recommendation=asdict(rec) if rec else None, recommendation_error=error, confirmation=conf)
    final = report.final_answer(rep, provisional=bool(p["unfinished"]))
    if final["state"] == "provisional":
        st.warning(f"**Provisional**: {p['unfinished']} of {p['jobs']} job(s) of this study and its confirmation are "
                   "unfinished. The answer below can still change; publishing waits until they end."
                   + (f" Time left: {p['time_left']}." if p["time_left"] else ""))
    else:
        box = {"confirmed": st.success, "not confirmed": st.warning, "recommendation": st.info}.get(final["state"],
                                                                                                  st.info)
        box(f"**Answer: {final['text']}**")

    st.subheader("Design")
    st.dataframe(pd.DataFrame([
        {"": "model", "value": d["model"]}, {"": "data", "value": d["dataset"]},
        {"": "budget", "value": d["budget"]}, {"": "design", "value": d["design"]},
        {"": "ratios", "value": ", ".join(r for r in d["ratios"] if r not in d["left_out"])},
        *([{"": "left out", "value": f"{', '.join(d['left_out'])}: the calculator cannot budget-match it"}]
          if d["left_out"] else []), {"": "seeds", "value": ", ".join(map(str, d["seeds"]))},
        {"": "schedule", "value": d["schedule"] + (f"; {d['search']}" if d["search"] else "")},
        {"": "evaluated on", "value": d["eval"]},
        {"": "confirmation", "value": ", ".join(c[:8] for c in rep["confirmations"]) or "not queued"}]),
        hide_index=True, width="stretch")
    c = st.columns(4)
    for col, state in zip(c, ("queued", "running", "succeeded", "failed")):
        col.metric(state, p["counts"].get(state, 0))
    if p["ahead"]:
        st.caption(f"{p['ahead']} job(s) of other sweeps are queued ahead of this study; they run first.")

    if rep["search"]:
        st.subheader("Rungs")
        study_ui.search_panel(store, sweep_id)

    jobs = store.list(sweep=sweep_id)
    smoothing = s.get("study_smoothing", 0.8)
    curves = pd.DataFrame(progress.loss_curves(jobs, smoothing=smoothing))
    if not curves.empty:
        st.subheader("Training loss by ratio")
        a, b = st.columns([1, 3])
        each = a.toggle("Each seed", key="study_loss_seeds")
        b.slider("Smoothing", 0.0, 0.99, 0.8, 0.01, key="study_smoothing",
                 help="exponential moving average of each seed's loss (debiased, as in TensorBoard) before the mean")
        curves = curves.assign(loss=curves["smoothed"])
        st.altair_chart(charts.loss_band_chart(curves, seeds=each), width="stretch")
        st.caption("The mean over seeds per ratio of each seed's smoothed loss; the band spans the lowest to the "
                   "highest seed at each step.")

    st.subheader("The answer")
    if rec is None and final["state"] == "provisional":  # not an error while the study is still running
        st.info("No recommendation yet: it comes once three ratios, 1:1:1 among them, are evaluated at the last "
                "rung reached so far.")
    elif rec is None:
        st.info(error or "No recommendation yet.")
    else:
        w = next(x for x in found if x["id"] == sweep_id)
        study_ui.recommendation_panel(rec, [w] if final["state"] != "provisional" else [], confirmation=conf)
    _publish(final, best if final["state"] == "confirmed" else None)


def _publish(final: dict, best: dict | None) -> None:
    """The best adapter of the confirmed ratio on the confirmation's split, to the Publish page; disabled until
    the study has ended and its confirmation bore the ratio out."""
    why = {"provisional": "the study is still running", "confirmed": "",
           "not confirmed": "the confirmation did not bear the ratio out",
           "recommendation": "the recommendation is not confirmed yet"}.get(final["state"], "there is no answer")
    if st.button("Publish the confirmed adapter", disabled=best is None, key="study_publish",
                 help=f"disabled: {why}" if best is None else f"{best['name']}: {best['accuracy']:.2f}%"):
        s["publish_adapter"] = best["path"]
        try:
            st.switch_page("app_pages/publish.py")
        except StreamlitAPIException:
            st.info(f"Open the Publish page: the adapter is kept for it: {best['path']}")


live(sweep)
