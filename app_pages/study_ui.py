"""Widgets of designed studies, shared by the jobs and compare pages: the design / halving inputs of the launch
form, a search's rungs and survivors, and the recommendation with its ternary plot and the confirm button.
UI helpers return values; what they show is computed in toolkit (jobs.design, jobs.halving, evaluation.surface)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from toolkit.errors import CmbaError
from toolkit.fields import settings_field
from toolkit.queue.store import JobStore
from toolkit.study import halving
from toolkit.study.search import Search
from toolkit.study.settings import SweepSettings

DOC = {name: settings_field(SweepSettings, name).doc for name in ("design", "search", "rungs", "controls")}
"""the help of the design inputs: the `sweep` flags' (toolkit/study/settings.py)"""


def design_inputs(max_steps: int) -> tuple[str | None, dict | None]:
    """(design, search) for SweepSpec.build from the launch form's 'Designed study' inputs."""
    if not st.checkbox("Designed study over the simplex", key="jobs_designed",
                       help="arms from a simplex-lattice or simplex-centroid design (1:1:1 always in), "
                            "added to the ratios above"):
        return None, None
    a, b, c = st.columns(3)
    design = a.text_input("Design", "simplex-lattice:3", key="jobs_design", help=DOC["design"])
    if not b.checkbox("Successive halving", True, key="jobs_halving", help=DOC["search"]):
        return design, None
    try:  # the rungs a search of max_steps takes by default (eta's default: toolkit/study/settings.py)
        default = ",".join(map(str, Search.parse("halving", max_steps=max_steps,
                                                 eta=settings_field(SweepSettings, "eta").default).rungs))
    except CmbaError:  # too few steps for two rungs: the steps alone, which the plan then refuses with the reason
        default = str(max_steps)
    rungs = c.text_input("Rungs (steps)", default, key="jobs_rungs", help=DOC["rungs"])
    controls = st.checkbox("Controls with the confirmation: learning-rate control and alpha-rule axis",
                           key="jobs_controls", help=DOC["controls"])
    return design, {"kind": "halving", "rungs": [int(r) for r in rungs.split(",") if r.strip().isdigit()],
                    "controls": controls}


def search_panel(store: JobStore, sweep_id: str) -> None:
    """A halving search's rungs, every arm's state (why it stopped) and the confirmation, when it is one."""
    status = halving.status(store, sweep_id)
    if status is None:
        return
    s = status["search"]
    st.caption(f"Successive halving · rungs {', '.join(map(str, s['rungs']))} steps · keep 1/{s['eta']:g} · "
               f"an arm is dropped only beyond {s['z']:g} standard errors")
    if status["arms"]:
        st.dataframe(pd.DataFrame([{"arm": a, "state": t} for a, t in sorted(status["arms"].items())]),
                     hide_index=True, width="stretch")
    else:
        st.caption("No rung decided yet: rung 1 is queued or training.")
    rec, conf = status.get("recommendation"), status.get("confirmation")
    if rec and "outcome" in rec:
        OUTCOME_BOX[rec["outcome"]](f"**{rec['headline']}**: {rec['reason']}")
    if conf:
        outcome = conf.get("outcome") or {}
        if "error" in conf:
            st.error(f"Confirmation: {conf['error']}")
        elif "skipped" in conf:
            st.info(f"Confirmation: {conf['skipped']}")
        else:
            box = {"confirmed": st.success, "not confirmed": st.warning}.get(outcome.get("state"), st.info)
            box(f"Confirmation (sweep {conf['sweep'][:8]}: {', '.join(conf['ratios'])}, seeds "
                f"{', '.join(map(str, conf['seeds']))}, evaluated on '{conf['split']}'): "
                + (outcome.get("text") or _progress(store, conf["sweep"])))


def _progress(store: JobStore, sweep_id: str) -> str:
    """Where a queued sweep stands, in words (its outcome, once known, is said where it is computed)."""
    jobs = store.list(sweep=sweep_id)
    done = sum(1 for j in jobs if j.state.finished)
    if not jobs or done == 0:
        return "queued" if not any(j.state.value == "running" for j in jobs) else f"running (0 of {len(jobs)} jobs done)"
    if done < len(jobs):
        return f"running ({done} of {len(jobs)} jobs done)"
    return "finished: its outcome is the answer (below, and on Compare)"


OUTCOME_BOX = {"use": st.success, "candidate": st.info, "none": st.warning}


def recommendation_panel(rec, sweeps: list[dict], *, confirmation: dict | None = None) -> None:
    """The study's answer (toolkit.evaluation.recommendation.Recommendation): its outcome and reason, the
    confirmation's outcome where it ran (`confirmation`, default the one `rec` found in its rows), the ternary plot
    when the design supports a surface, and one click to queue the confirmation of a candidate for one of `sweeps`."""
    from toolkit.evaluation import charts

    conf = confirmation or rec.confirmation or {}
    if conf.get("state") == "confirmed":
        st.success(f"**{conf['text']}**")
    elif conf.get("state") == "not confirmed":
        st.warning(f"**{conf['text']}**")
    OUTCOME_BOX[rec.outcome](f"**{rec.headline}**" + (" (the study's data; the confirmation above is the final "
                                                        "answer)" if conf.get("state") in ("confirmed", "not confirmed")
                                                        else "") + f": {rec.reason}")
    if conf.get("state") == "pending":
        st.info(conf["text"])
    left, right = st.columns([3, 2])
    if rec.method == "surface":
        left.altair_chart(charts.ternary_chart(rec))
        left.caption("Colour: the fitted accuracy (faded beyond the range of each share the arms trained: there the "
                     "fit extrapolates and no optimum is sought). Circles: the arms as measured (mean over seeds, per "
                     "rung); red crosses: ratios the data cannot tell from the optimum; red triangle: the recommended "
                     "ratio.")
    else:
        left.dataframe(readable_arms(rec), hide_index=True, width="stretch")
    if rec.ratio:
        right.metric("Recommended ratio" if rec.outcome == "use" else "Candidate ratio", rec.ratio,
                     f"{rec.gain:+.2f} points vs 1:1:1 ({rec.gain_source})")
        right.caption(f"95% interval of the gain {rec.gain_ci[0]:+.2f} to {rec.gain_ci[1]:+.2f}, adjusted for "
                      f"choosing it among {rec.n_arms - 1} ratios" + (" and the surface's points" if rec.method ==
                                                                       "surface" else ""))
    right.caption(f"{rec.model} · {rec.n_runs} runs over {rec.n_arms} ratios"
                  + (f" · lack-of-fit p {rec.lack_of_fit_p:.3f}" if rec.lack_of_fit_p is not None else ""))
    if not rec.confirm or not sweeps or conf:
        return
    sweep = right.selectbox("Study sweep", [s["id"] for s in sweeps], key="cmp_confirm_sweep",
                            format_func=lambda i: f"{i[:8]} · {next(s['spec'].get('design') or 'ratios' for s in sweeps if s['id'] == i)}") \
        if len(sweeps) > 1 else sweeps[0]["id"]
    if right.button("Queue confirmation", key="cmp_confirm"):
        from toolkit.queue.lifecycle import ensure_worker
        from toolkit.study.confirm import queue_confirmation

        try:
            plan, result = queue_confirmation(JobStore(), sweep, ratio=rec.ratio)  # a candidate: its gain is > 0
            ensure_worker()
            right.success(f"{'Queued' if result.created else 'Already queued'}: sweep {plan.short_id}, "
                          f"{', '.join(plan.spec.ratios)} × seeds {', '.join(map(str, plan.spec.seeds))} on "
                          f"'{plan.spec.eval_split}'")
        except CmbaError as exc:
            right.error(str(exc))


def readable_arms(rec) -> pd.DataFrame:
    """Each last-rung ratio against 1:1:1 with its selection-adjusted interval."""
    return pd.DataFrame([{"ratio": a["ratio"], "seeds": a["seeds"], "accuracy (%)": round(a["accuracy"], 2),
                          "Δ vs 1:1:1": round(a["gain"], 2),
                          "adjusted 95% CI": f"{a['ci'][0]:+.2f} to {a['ci'][1]:+.2f}"} for a in rec.arms])


def retrieval_panel(rows: list[dict]) -> None:
    """Each ratio's image-text retrieval (the alignment metric): mean and 95% half-width over seeds."""
    from toolkit.evaluation import retrieval

    table = retrieval.summary(rows)
    if table:
        st.subheader("Cross-modal alignment: image-text retrieval")
        st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch")
        st.caption("Recall@k (%) from the model's caption log-likelihoods, image→text (i2t) and text→image (t2i); "
                   "± is the 95% t half-width over seeds.")
        tests = retrieval.against_baseline(rows)
        if tests:
            st.dataframe(pd.DataFrame(tests), hide_index=True, width="stretch")
