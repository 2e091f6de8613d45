"""Widgets of designed studies, shared by the jobs and compare pages: the design / halving inputs of the launch
form, a search's rungs and survivors, and the recommendation with its ternary plot and the confirm button.
UI helpers return values; what they show is computed in toolkit (jobs.design, jobs.halving, evaluation.surface)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from toolkit.errors import CmbaError
from toolkit.jobs import halving
from toolkit.jobs.store import JobStore


def design_inputs(max_steps: int) -> tuple[str | None, dict | None]:
    """(design, search) for SweepSpec.build from the launch form's 'Designed study' inputs."""
    if not st.checkbox("Designed study over the simplex", key="jobs_designed",
                       help="arms from a simplex-lattice or simplex-centroid design (1:1:1 always in), "
                            "added to the ratios above"):
        return None, None
    a, b, c = st.columns(3)
    design = a.text_input("Design", "simplex-lattice:3", key="jobs_design",
                          help="simplex-lattice:M or simplex-centroid, optionally ?floor=0.1")
    if not b.checkbox("Successive halving", True, key="jobs_halving",
                      help="train every arm to the first rung, keep the better half (noise-aware), continue "
                           "the survivors from their checkpoints; then queue the confirmation"):
        return design, None
    default = ",".join(map(str, sorted({max(1, round(max_steps / 2 ** k)) for k in range(3)})))
    rungs = c.text_input("Rungs (steps)", default, key="jobs_rungs", help="the last one = Steps")
    controls = st.checkbox("Controls with the confirmation: learning-rate control and alpha-rule axis",
                           key="jobs_controls", help="1:1:1 with the projector's lr scaled as the winner scales "
                           "its rank; the winner and 1:1:1 under rsLoRA and fixed alpha")
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
        st.caption("Rung 1 is running: no decision yet.")
    rec, conf = status.get("recommendation"), status.get("confirmation")
    if rec:
        st.success(f"Recommended ratio **{rec['ratio']}**: {rec['gain']:+.2f} points over 1:1:1 "
                   f"(95% CI {rec['gain_ci'][0]:+.2f} to {rec['gain_ci'][1]:+.2f})")
    if conf:
        (st.error if "error" in conf else st.info)(
            f"Confirmation: {conf['error']}" if "error" in conf else
            f"Confirmation queued as sweep {conf['sweep'][:8]}: {', '.join(conf['ratios'])}, seeds "
            f"{', '.join(map(str, conf['seeds']))}, evaluated on '{conf['split']}'")


def recommendation_panel(rec, sweeps: list[dict]) -> None:
    """The fitted recommendation (toolkit.evaluation.surface.Recommendation), its ternary plot, and one click
    to queue its confirmation for one of the designed sweeps."""
    from toolkit.evaluation import charts

    left, right = st.columns([3, 2])
    left.altair_chart(charts.ternary_chart(rec))
    right.metric("Recommended ratio", rec.ratio, f"{rec.gain:+.2f} points vs 1:1:1")
    right.caption(f"95% CI of the gain {rec.gain_ci[0]:+.2f} to {rec.gain_ci[1]:+.2f} · optimum "
                  + ":".join(f"{x:.2f}" for x in rec.optimum) + f" · {rec.model}, R² {rec.r2:.2f}, "
                  f"{rec.n_runs} runs over {rec.n_ratios} ratios, {rec.n_boot} bootstrap refits over seeds and questions")
    right.caption(f"Confirmation {'needed' if rec.confirm else 'not needed'}: {rec.confirm_reason}")
    if not sweeps:
        return
    sweep = right.selectbox("Study sweep", [s["id"] for s in sweeps], key="cmp_confirm_sweep",
                            format_func=lambda i: f"{i[:8]} · {next(s['spec'].get('design') or 'ratios' for s in sweeps if s['id'] == i)}")
    if right.button("Queue confirmation", key="cmp_confirm"):
        from toolkit.jobs.confirm import queue_confirmation
        from toolkit.jobs.worker import ensure_worker

        try:
            plan, result = queue_confirmation(JobStore(), sweep, ratio=rec.ratio)
            ensure_worker()
            right.success(f"{'Queued' if result.created else 'Already queued'}: sweep {plan.short_id}, "
                          f"{', '.join(plan.spec.ratios)} × seeds {', '.join(map(str, plan.spec.seeds))} on "
                          f"'{plan.spec.eval_split}'")
        except CmbaError as exc:
            right.error(str(exc))


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
