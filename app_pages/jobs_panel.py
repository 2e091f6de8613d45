"""The live jobs panel of the Train & jobs page (a 2-s fragment) and the launch form's cached checks.

Reads the job store and the run folders (toolkit.study.progress); acts through toolkit.queue.store and
toolkit.queue.actions (sweep-level cancel and retry). Nothing here trains.
"""

import json
import time

import altair as alt
import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitAPIException

from app_pages import study_ui
from toolkit.errors import CmbaError
from toolkit.evaluation import charts
from toolkit.outcomes import Reason
from toolkit.paths import adapters_dir, jobs_dir
from toolkit.queue import actions
from toolkit.queue.executor import tail_lines
from toolkit.queue.lifecycle import ensure_worker, live_workers, revive_worker, starting_worker
from toolkit.queue.store import JobStore
from toolkit.queue.worker import slots_here
from toolkit.study import estimate, preflight
from toolkit.study import progress as progress_of
from toolkit.study.packrun import cancel_arm, retry_arm

s = st.session_state
# A rerun of the 2-s panel marks its elements stale (Streamlit fades them) until it ends; on a busy machine that
# greys the panel out every 2 s. The values shown are at most one refresh old, so keep them fully visible.
NO_FADE = "<style>[data-stale='true'] { opacity: 1 !important; transition: none !important; }</style>"


@st.cache_data(ttl=30, max_entries=16, show_spinner="Checking weights, data and devices...")
def _preflight(spec_json: str, _spec) -> list[str]:
    return preflight.preflight(_spec)


def cached_preflight(spec) -> list[str]:
    """The sweep's pre-flight problems (toolkit.study.preflight), re-checked at most every 30 s."""
    return _preflight(json.dumps({**spec.normalised(), "executor": spec.executor, "gpus": spec.gpus_per_job,
                                  "stores": [str(jobs_dir()), str(adapters_dir())]}, sort_keys=True, default=str), spec)


@st.cache_data(ttl=30, max_entries=4, show_spinner=False)
def _history(stores: tuple[str, str]) -> list:
    """What was measured here (toolkit.study.estimate.measured_here), read again at most every 30 s."""
    return estimate.measured_here(JobStore())


def measured() -> list:
    """The rates measured here for estimates and time left, shared by the pages' live panels (cached 30 s)."""
    return _history((str(jobs_dir()), str(adapters_dir())))


def cached_estimate(plan) -> str | None:
    """The sweep's time estimate as text, from the runs measured here (None when none matches)."""
    est = estimate.estimate_sweep(estimate.plan_jobs(plan), measured(), slots=slots_here())
    return est.text() if est else None


def _time_left(store: JobStore, jobs, workers: list[dict], *, search: bool) -> str | None:
    """The selected sweep's time left (toolkit.study.estimate.time_left) as a caption; the rates measured here are
    read again at most every 30 s, the running jobs' own metrics at every refresh."""
    if all(j.state.finished for j in jobs):
        return None
    left = estimate.time_left(jobs, measured(), slots=slots_here(workers), ahead=estimate.queued_ahead(store, jobs))
    return (f"Time left: {left.left_text(search=search)}" if left else
            "Time left: not known yet (no measured rate of this model here); each job's ETA shows from its first steps")


def measure_speed(plan) -> None:
    """The 'Measure speed here' button under an absent estimate: a probe (toolkit.study.probe) of the sweep's first
    job, its output shown as it runs; the estimate is read again afterwards."""
    from toolkit.study import probe

    st.button("Measure speed here", key="jobs_measure", on_click=lambda: s.update(jobs_measure_requested=True),
              help=f"Trains {probe.PROBE_STEPS} steps of the first job and answers one batch of questions on this "
                   "machine (its own processes, deleted afterwards), so the estimate has a measured speed")
    store = JobStore()
    if note := probe.busy_note(store):
        st.caption(f"Note: {note}.")
    if not s.pop("jobs_measure_requested", False):
        return
    with st.status("Measuring: a few training steps of the first job, then one batch of questions", expanded=True) as box:
        line = st.empty()
        try:
            measured = probe.measure(plan, log=lambda text: line.caption(text[:300]))
        except CmbaError as exc:
            box.update(label="Measuring failed", state="error")
            st.error(str(exc))
            return
        probe.save(measured, store.folder)
        box.update(label=f"Speed {measured.text()}", state="complete", expanded=False)
    _history.clear()
    st.rerun()


def _text(value, fmt: str = "{}") -> str:
    return "" if value is None else fmt.format(value)


OPTIONAL = ("phase", "step", "loss", "ETA", "accuracy %", "reason")
"""columns left out while no job has a value in them (the table then fits a 1280-px window)"""


def _rows(progress: list[dict]) -> list[dict]:
    """The jobs, each pack job followed by its arms (id `<job>.<k>`, name "arm <ratio> seed <s>")."""
    out = []
    for p in progress:
        out.append(p)
        out += [{**p, **a, "name": f"arm {a['ratio']} seed {a['seed']}", "phase": "", "eta_s": None,
                 "reason": Reason.CANCELLED if a["state"] == "cancelled" else None, "message": None}
                for a in p.get("arms") or []]
    return out


def _table(progress: list[dict]) -> pd.DataFrame:
    """One row per job (and per arm of a pack), as text: no 'None' cells, counts with separators, empty columns left
    out."""
    table = pd.DataFrame([{
        "job": p["id"], "name": p["name"], "state": p["state"],
        "phase": p["phase"] if p["state"] == "running" else "",
        "progress": p["fraction"] or 0.0,
        "step": f"{p['step']:,}/{p['max_steps']:,}" if p["step"] is not None and p["max_steps"] else "",
        "loss": _text(p["loss"], "{:.4f}"),
        "ETA": _text(None if p["eta_s"] is None or p["state"] != "running" else p["eta_s"] / 60, "{:.1f} min"),
        "accuracy %": _text(next(iter(p["scores"].values()), None), "{:.2f}"),
        "attempts": f"{p['attempts']}/{p['max_attempts']}",
        "reason": ": ".join(x for x in (p["reason"], (p["message"] or "").removeprefix("error: ")) if x),
        "runs on": p["executor"] + (f" {p['engine_id']}" if p["engine_id"] else "")} for p in _rows(progress)])
    if set(table["runs on"]) == {"local"}:
        table = table.drop(columns=["runs on"])
    return table.drop(columns=[c for c in OPTIONAL if not table[c].astype(bool).any()])


def _loss_chart(jobs, smoothing: float):
    curves = pd.DataFrame(progress_of.loss_curves(jobs, smoothing=smoothing))
    if curves.empty:
        return None
    # one colour per ratio (a study has a few; it may have dozens of jobs), one line per job
    base = alt.Chart(curves.assign(ratio=curves["ratio"].astype(str))).encode(
        x=alt.X("step:Q", title="step", axis=alt.Axis(format="d", tickMinStep=1)),
        color=alt.Color("ratio:N", title="ratio v:p:l", scale=charts.RATIO_COLORS), detail="job:N")
    smoothed = base.mark_line().encode(y=alt.Y("smoothed:Q", title="loss", scale=alt.Scale(zero=False)),
                                       tooltip=["name", "ratio", "seed", "step", alt.Tooltip("loss:Q", format=".4f"),
                                                alt.Tooltip("smoothed:Q", format=".4f")])
    return (base.mark_line(opacity=0.25).encode(y="loss:Q") + smoothed) if smoothing else smoothed


def _sweep_actions(store: JobStore, sweep: dict) -> None:
    """Cancel / retry the whole sweep; follow it on the Study page; once it has ended with results, open it in
    Compare."""
    counts, sweep, spec = sweep["counts"], sweep["id"], sweep["spec"]
    a, b, d, c = st.columns([1, 1, 1, 2])
    unfinished = counts.get("queued", 0) + counts.get("running", 0)
    retryable = counts.get("failed", 0) + counts.get("cancelled", 0)
    if a.button("Cancel sweep", disabled=not unfinished, key="jobs_cancel_sweep",
                help="cancel every queued job and stop every running one"):
        done = actions.cancel_sweep(store, sweep)
        st.toast(f"Cancel requested for {len(done)} job(s) of sweep {sweep[:8]}")
    if b.button("Retry sweep", disabled=not retryable, key="jobs_retry_sweep",
                help="queue every failed or cancelled job again; each resumes from its last checkpoint"):
        done = actions.retry_sweep(store, sweep)
        worker = ensure_worker()
        st.toast(f"Queued {len(done)} job(s) of sweep {sweep[:8]} again"
                 + (f"; started a worker (pid {worker['pid']})" if worker["started"] else ""))
    if d.button("Open study", key="jobs_open_study", help="this sweep on the Study page: its design, rungs, "
                "recommendation, confirmation and answer (provisional while any job is unfinished)"):
        s["study_focus"] = spec.get("confirms") or sweep
        try:
            st.switch_page("app_pages/study.py")
        except StreamlitAPIException:
            d.info("Open the Study page: it will show this sweep.")
    if counts and not unfinished and counts.get("succeeded"):
        if c.button("Open in Compare", type="primary", key="jobs_open_compare",
                    help="this sweep's model on the Compare page: statistics by ratio and the verdict"):
            s["compare_focus"] = {"model": spec.get("model")}
            try:
                st.switch_page("app_pages/compare.py")
            except StreamlitAPIException:  # the page run on its own (no navigation): the focus waits for it
                c.info("Open the Compare page: it will show this sweep's model.")


def pick_sweep() -> str | None:
    """The sweep the panel follows, picked outside the 2-s refresh: its options (id, model, what, when) never
    change under the pointer, so an open dropdown is not rebuilt mid-click (with live counts in the labels it
    closed by itself during the refresh). The form sets `jobs_sweep` when it queues one."""
    sweeps = JobStore().sweeps()
    if not sweeps:
        return None

    def label(w: dict) -> str:
        spec = w["spec"]
        what = spec.get("design") or f"{len(spec.get('ratios') or [])} ratio(s) × {len(spec.get('seeds') or [])} seed(s)"
        return (f"{w['id'][:8]} · {spec.get('name') or spec.get('model')} · {what} · queued "
                f"{time.strftime('%b %d %H:%M', time.localtime(w['created']))}")

    labels = {w["id"]: label(w) for w in sweeps}
    if s.get("jobs_sweep") not in labels:
        s["jobs_sweep"] = sweeps[0]["id"]
    return st.selectbox("Sweep", list(labels), key="jobs_sweep", format_func=labels.get)


@st.fragment(run_every=2)
def jobs_panel(sweep: str | None):
    st.markdown(NO_FADE, unsafe_allow_html=True)
    store = JobStore()
    sweeps = store.sweeps()
    workers = live_workers(store)
    if (revived := revive_worker(store, workers=workers)) and revived["started"]:  # queued jobs whose worker died
        st.toast(f"Started a worker for the queued jobs (pid {revived['pid']}).")
        workers = live_workers(store)
    left, right = st.columns([3, 1])
    starting = None if workers else starting_worker(store)
    left.caption(f"Worker: pid {workers[0]['pid']}, {workers[0]['slots']} slot(s)" if workers
                 else f"Worker starting (pid {starting})..." if starting
                 else "No worker running (queued jobs wait until one starts).")
    if not workers and right.button("Start worker"):
        ensure_worker()
    by_id = {w["id"]: w for w in sweeps}
    if sweep not in by_id:
        st.info("No sweeps yet: launch one above." if not sweeps else
                "A sweep was queued elsewhere: press R (rerun) to pick it.")
        return
    st.markdown(f"**Sweep {sweep[:8]}**: " + ", ".join(f"{n} {state}" for state, n in
                                                        sorted(by_id[sweep]["counts"].items())))
    _sweep_actions(store, by_id[sweep])
    jobs = store.list(sweep=sweep)
    study_ui.search_panel(store, sweep)
    progress = [progress_of.job_progress(j, log_lines=0) for j in jobs]
    if left := _time_left(store, jobs, workers, search=estimate.queues_rungs(by_id[sweep]["spec"])):
        st.caption(left)
    st.dataframe(_table(progress), hide_index=True, width="stretch", column_config={
        "progress": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, width="small"),
        "step": st.column_config.TextColumn(width="medium"),  # "1,300/3,000" is not clipped
        "attempts": st.column_config.TextColumn(width="small"),
        "reason": st.column_config.TextColumn(width="large")})
    smoothing = st.slider("Loss smoothing", 0.0, 0.99, 0.6, 0.01, key="jobs_smoothing",
                          help="exponential moving average, debiased as in TensorBoard; the raw loss stays faint")
    chart = _loss_chart(jobs, smoothing)
    if chart is not None:
        st.altair_chart(chart, width="stretch")
    arms = {a["id"]: (p["id"], a) for p in progress for a in p.get("arms") or []}  # a pack's arms: cancel one
    ids = [i for j in jobs for i in (j.id, *(a for a in arms if arms[a][0] == j.id))]
    if s.get("jobs_selected") not in ids:  # first look at a sweep: its first failed job, if any
        s["jobs_selected"] = next((j.id for j in jobs if j.state.value == "failed"), jobs[0].id)
    names = {j.id: j.name for j in jobs} | {i: f"arm {a['ratio']} seed {a['seed']}" for i, (_, a) in arms.items()}
    job_id = st.selectbox("Job", ids, key="jobs_selected", format_func=lambda i: f"{i} · {names[i]}",
                          help="a pack job's arms are listed under it as <job>.<k>: cancelling one arm takes it "
                               "out of its pack (checkpointed) while the other arms go on")
    arm = arms.get(job_id)
    job = store.get(arm[0] if arm else job_id)
    a, b, c = st.columns([1, 1, 4])
    try:
        if arm:
            if a.button("Cancel", disabled=arm[1]["state"] in ("succeeded", "cancelled")):
                done = cancel_arm(store, job_id)
                st.toast(f"Arm {job_id}: cancel requested; it leaves its pack at the next step"
                         + ("; no arm was left, so the job is cancelled" if done["job_cancelled"] else ""))
            if b.button("Retry", disabled=arm[1]["state"] != "cancelled" or job.state.value == "running"):
                retry_arm(store, job_id)
                worker = ensure_worker()
                st.toast(f"Arm {job_id}: queued again with its pack; it resumes from its checkpoint"
                         + (f"; started a worker (pid {worker['pid']})" if worker["started"] else ""))
        else:
            if a.button("Cancel", disabled=job.state.finished):
                job = store.request_cancel(job.id)
                st.toast(f"Job {job.id}: {'cancelled' if job.state.finished else 'cancel requested'}")
            if b.button("Retry", disabled=job.state.value not in ("failed", "cancelled")):
                job = store.retry(job.id)
                worker = ensure_worker()
                st.toast(f"Job {job.id} queued again (retry {job.retries}); it resumes from its last checkpoint"
                         + (f"; started a worker (pid {worker['pid']})" if worker["started"] else ""))
    except CmbaError as exc:
        st.error(str(exc))
    if job.message:
        c.error(job.message)
    st.code("\n".join(tail_lines(job.log_path, 40)) or "(no log yet)", language="text", wrap_lines=True)
