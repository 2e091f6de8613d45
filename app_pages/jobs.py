"""Train & jobs: plan a sweep (ratios x seeds), queue it for the background worker, follow it live.

The page never trains: it queues jobs in the SQLite store and starts a detached worker (`ensure_worker`)
that outlives the app. Model, budget and ratio come prefilled from the calculator page. Jobs run on this
machine or on a Slurm cluster (resources per job); the panel below reads the store either way.
"""

import pandas as pd
import streamlit as st

from app_pages import study_ui
from app_pages.calculator_ui import BUDGET_DEFAULTS, BUDGET_LABELS, cached_structure
from app_pages.jobs_panel import cached_estimate, cached_preflight, jobs_panel, measure_speed, pick_sweep
from app_pages.settings_ui import number_bounds, setting_input
from toolkit.calculator.report import CANONICAL_RATIOS
from toolkit.calculator.spec import Ratio
from toolkit.errors import CmbaError
from toolkit.fields import settings_field
from toolkit.queue.lifecycle import ensure_worker
from toolkit.queue.slurm.cluster import slurm_problem
from toolkit.queue.store import JobStore
from toolkit.study import sweep as sw
from toolkit.study.settings import SweepSettings
from toolkit.training.settings import TrainSettings

s = st.session_state


def plan_table(plan) -> pd.DataFrame:
    """The plan's rows as text: thousands separators, and a dash where a value does not apply (reference row)."""
    def cell(value):
        return "–" if value is None else f"{value:,}" if isinstance(value, int) else value

    one_budget = len(plan.spec.budgets) == 1  # then the caption says it, and the table keeps its width for the rest
    jobs = [j for job in plan.jobs for j in (job, *job.arms)]  # a pack, then its arms (<job>.<k>)
    rows = [{k: cell(v) for k, v in j.row().items() if k != "output" and not (one_budget and k in ("budget", "budget params"))}
            for j in jobs]
    for row, job in zip(rows, jobs, strict=True):
        row["budget error %"] = "–" if job.budget_error is None or job.arms else f"{job.budget_error:+.2f}"
        if job.arms:  # the pack's own row: what it holds; its arms follow with their ratios and ranks
            row.update({"ratio": f"{row.pop('arms')} arms", "ranks v:p:l": "–"})
    return pd.DataFrame(rows)
DOC = {name: settings_field(TrainSettings, name).doc for name in ("model", "dataset")}  # the CLI's --help texts


def _prefill_from_calculator() -> None:
    """Copy the calculator's model, budget and ratio (its `launch` hand-off) when they changed since the last copy."""
    launch = s.get("launch") or {}
    kind = launch.get("budget_kind", "rank")
    try:
        ratio = str(Ratio.parse(launch.get("ratio", "1:4:1")))
    except CmbaError:
        ratio = "1:4:1"
    snapshot = (launch.get("model") or "demo", kind, launch.get("budget_value") or BUDGET_DEFAULTS[kind], ratio)
    if s.get("_jobs_prefilled") != snapshot:
        s["_jobs_prefilled"] = snapshot
        s.update(jobs_model=snapshot[0], jobs_budget_kind=kind, jobs_budget_value=snapshot[2],
                 jobs_ratios=list(dict.fromkeys(["1:1:1", ratio])))
        # training defaults: the demo model learns on a CPU in about a minute a run with these
        d = sw.suggested_settings(snapshot[0])
        s.update(jobs_seeds=d["seeds"], jobs_steps=d["max_steps"], jobs_batch=d["batch_size"],
                 jobs_lr=f"{d['lr']:g}", jobs_eval_limit=d["eval_limit"])  # the lr box shows text, e.g. 2e-3


FORM_KEYS = ("jobs_model", "jobs_dataset", "jobs_budget_kind", "jobs_budget_value", "jobs_mode", "jobs_ratios",
             "jobs_seeds", "jobs_steps", "jobs_batch", "jobs_lr", "jobs_eval", "jobs_eval_split", "jobs_eval_limit",
             "jobs_pack")


def _restore_form() -> None:
    """Streamlit drops a widget's state when a run does not render it (another page, or a rerun racing a
    fragment's): restore the launch form from plain shadow keys, which it never drops."""
    for k in FORM_KEYS:
        if k not in s and f"_{k}" in s:
            s[k] = s[f"_{k}"]


def _queue(plan) -> None:
    """Submit the planned sweep (idempotent), make sure a worker runs, select it below, remember what to say."""
    try:
        result = sw.submit_sweep(plan)
    except CmbaError as exc:  # the pre-flight checks, run again at the moment of queueing
        s["jobs_queued"] = {"created": False, "error": str(exc), "message": "", "worker": None}
        return
    worker = ensure_worker()
    s["jobs_sweep"] = plan.sweep_id  # the panel shows the sweep just queued (its selectbox is drawn later)
    s["jobs_queued"] = {
        "created": result.created,
        "message": (f"Queued {len(result.jobs)} job(s) as sweep {plan.short_id}." if result.created
                    else f"Sweep {plan.short_id} is already queued: nothing new (retry jobs below)."),
        "worker": f"Started a background worker (pid {worker['pid']})." if worker["started"] else None}


st.title("Train & jobs")
_restore_form()
_prefill_from_calculator()
s.setdefault("jobs_dataset", "synthetic:shapes")

# open on a first visit with no sweeps yet; decided once per session, so queueing a sweep (or the 2-s refresh)
# never collapses the form under the user's hands (a changed `expanded` re-creates the expander)
s.setdefault("jobs_launch_open", not JobStore().sweeps())
with st.expander("Launch a sweep", expanded=s["jobs_launch_open"]):
    a, b = st.columns(2)
    model = a.text_input("Model", key="jobs_model", help=DOC["model"])
    dataset = b.text_input("Dataset", key="jobs_dataset", help=DOC["dataset"])
    a, b, c = st.columns(3)
    kind = a.radio("Budget as", list(BUDGET_LABELS), format_func=BUDGET_LABELS.get, key="jobs_budget_kind",
                   on_change=lambda: s.update(jobs_budget_value=BUDGET_DEFAULTS[s.jobs_budget_kind]))
    budgets = b.text_input(BUDGET_LABELS[kind] + " (several: 8,16)", key="jobs_budget_value")
    mode = setting_input(TrainSettings, "mode", label="Mode", key="jobs_mode", where=c)
    options = list(dict.fromkeys([*CANONICAL_RATIOS, *s.get("jobs_ratios", [])]))
    ratios = st.multiselect("Ratios vision : projector : language", options, key="jobs_ratios",
                            accept_new_options=True, help="the canonical grid, or type your own V:P:L")
    a, b, c, d = st.columns(4)
    seeds = setting_input(SweepSettings, "seeds", label="Seeds", key="jobs_seeds", where=a)
    max_steps = setting_input(TrainSettings, "max_steps", label="Steps", key="jobs_steps", where=b)
    batch = setting_input(TrainSettings, "batch_size", label="Batch size", key="jobs_batch", where=c)
    lr = setting_input(TrainSettings, "lr", label="Learning rate", key="jobs_lr", where=d)
    a, b, c = st.columns(3)
    evaluate = a.checkbox("Evaluate after training", settings_field(SweepSettings, "evaluate").default, key="jobs_eval",
                          help=settings_field(SweepSettings, "evaluate").doc)
    eval_split = setting_input(SweepSettings, "eval_split", label="Eval split", key="jobs_eval_split", where=b,
                               disabled=not evaluate)
    limit = settings_field(SweepSettings, "eval_limit")  # 0 = all: the box's own word for leaving it out
    eval_limit = c.number_input("Eval questions (0 = all)", 0, number_bounds(limit)[1], key="jobs_eval_limit",
                                disabled=not evaluate, help=limit.doc)
    design, search = study_ui.design_inputs(int(max_steps))
    a, b = st.columns([1, 2])
    executor = a.radio("Run on", ["local", "slurm"], key="jobs_executor", horizontal=True,
                       format_func={"local": "this machine", "slurm": "Slurm cluster"}.get)
    pack = setting_input(SweepSettings, "pack", label="Pack the arms: one job trains them all on one copy of the base",
                         key="jobs_pack", where=b)
    slurm = None
    if executor == "slurm":
        problem = slurm_problem()
        if problem:
            st.warning(problem)
        a, b, c, d = st.columns(4)
        slurm = {"partition": a.text_input("Partition", key="jobs_partition", placeholder="cluster default"),
                 "nodes": b.number_input("Nodes", 1, 1024, 1, key="jobs_nodes"),
                 "gpus_per_node": c.number_input("GPUs per node", 0, 64, None, key="jobs_gpus_per_node",
                                                 placeholder="auto", help=">1 trains with DDP, same global batch"),
                 "cpus_per_gpu": d.number_input("CPUs per GPU", 1, 1024, None, key="jobs_cpus", placeholder="default")}
        a, b, c = st.columns([1, 1, 2])
        slurm.update(mem=a.text_input("Memory per node", key="jobs_mem", placeholder="e.g. 64G"),
                     time=b.text_input("Time limit", key="jobs_time", placeholder="e.g. 12:00:00"),
                     extra=c.text_input("Extra sbatch options", key="jobs_sbatch_extra", placeholder="--qos=high"))
    try:
        spec = sw.SweepSpec.build(
            model=model, dataset=dataset, ratios=ratios, budget_kind=kind, budgets=budgets, seeds=seeds, mode=mode,
            train={"max_steps": max_steps, "batch_size": batch, "lr": lr}, evaluate=evaluate,
            eval_split=eval_split, eval_limit=eval_limit or None, executor=executor, slurm=slurm, design=design,
            search=search, pack=pack)
        plan = sw.plan_sweep(spec, structure=cached_structure(spec.model, None))
    except CmbaError as exc:
        st.error(str(exc))
        plan = None
    if plan is not None:
        budget = (f" at {plan.spec.budgets[0]} ({plan.jobs[0].budget_params:,} params)"
                  if len(plan.spec.budgets) == 1 and plan.jobs[0].budget_params else "")
        st.caption(f"Sweep {plan.short_id}: {len(plan.jobs)} job(s){budget}, each trained with `--resume`"
                   + (f", then evaluated on '{spec.eval_split}'" if spec.eval_split else "")
                   + (f"; Slurm: `{' '.join(spec.slurm.sbatch_args())}`" if spec.executor == "slurm" else ""))
        st.dataframe(plan_table(plan), hide_index=True, width="stretch")
        for warning in plan.warnings:  # budget errors let through, ratios that caps made identical
            st.warning(warning)
        problems = cached_preflight(plan.spec)
        for problem in problems:  # what would make every job fail: refused before queueing
            st.error(problem)
        estimate = cached_estimate(plan)
        if estimate:
            st.info(f"Estimated time: {estimate}", icon=":material/timer:")
        elif spec.executor == "local":
            st.info("Estimated time: none yet (no earlier run of this model on this device here). Measure the "
                    "speed here first, or queue: the panel below shows each job's ETA from its first steps.", icon=":material/timer:")
            if not problems:
                measure_speed(plan)
        else:
            st.info("Estimated time: none yet (no earlier run of this model here); the panel below shows each "
                    "job's ETA from its first steps.", icon=":material/timer:")
        for k in FORM_KEYS:
            if k in s:
                s[f"_{k}"] = s[k]
        # The click only records the request (a callback, which a rerun of the 2-s jobs panel racing the click
        # cannot drop, as it could the button's bare True value); this run, with the form's current values, queues.
        st.button("Queue sweep", type="primary", on_click=lambda: s.update(jobs_queue_requested=True),
                  disabled=bool(problems))
        if s.pop("jobs_queue_requested", False) and not problems:
            _queue(plan)
    s.pop("jobs_queue_requested", None)  # a request made while the form was invalid is not kept for later
    queued = s.pop("jobs_queued", None)
    if queued and queued.get("error"):
        st.error(queued["error"])
    elif queued:
        (st.success if queued["created"] else st.info)(queued["message"])
        if queued["worker"]:
            st.caption(queued["worker"])


st.subheader("Jobs")
jobs_panel(pick_sweep())
