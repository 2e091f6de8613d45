"""Confirmation of a study's recommendation: the recommended ratio and uniform 1:1:1, fresh seeds, full schedule,
evaluated on the report split, queued as one ordinary sweep (so `compare` and its verdict rules decide).

    python -m toolkit confirm --sweep 90f53911 [--ratio 2:4:1] [--seeds 3] [--report-split test] [--json]
    rec = sweep_recommendation(store, sweep_id)        # the study's recommendation from the sweep's evaluations
    plan, result = queue_confirmation(store, sweep_id)  # idempotent: the same confirmation is queued once

The confirmation sweep copies every setting of the study's sweep (model, data, budget, training) except the
ratios (recommended + 1:1:1), the seeds (new ones, after the study's), the evaluated split (`report_split`,
default the study's `search.report_split`, else "test") and the design/search (every arm trains fully).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit import runs
from toolkit.calculator.spec import Ratio
from toolkit.errors import InputError
from toolkit.queue.store import JobStore


def stored_spec(store: JobStore, sweep_id: str) -> dict:
    spec = store.sweep_spec(sweep_id)
    if spec is not None:
        return spec
    raise InputError(f"sweep: no sweep '{sweep_id}' (see `python -m toolkit jobs list`)")


def sweep_rows(store: JobStore, sweep_id: str) -> list[dict]:
    """compare.scan rows of the adapters this sweep trained (every rung's snapshots and final runs, every arm of a
    pack job)."""
    from toolkit.evaluation import compare

    folders = set()
    for job in store.list(sweep=sweep_id):
        arms = [a.get("output_dir") for a in job.meta.get("arms") or []]  # a pack job: every arm's run folder
        snaps = [str(runs.snapshot_dir(a, until)) for a in arms for until in job.meta.get("rungs") or []]  # its rungs
        for path in (job.meta.get("adapter"), job.output_dir, *arms, *snaps):
            if path:
                folders.add(str(Path(path).resolve()))
    roots = {str(Path(f).parent) for f in folders}
    return [r for root in sorted(roots) for r in compare.scan(root).rows if str(Path(r["path"]).resolve()) in folders]


def sweep_recommendation(store: JobStore, sweep_id: str, *, n_boot: int | None = None):
    """The study's Recommendation from the sweep's own evaluations (toolkit.evaluation.recommendation), or
    InputError when there is none yet."""
    from toolkit.evaluation import recommendation

    rows = sweep_rows(store, sweep_id)
    kwargs = {} if n_boot is None else {"n_boot": n_boot}
    rec = recommendation.recommend(rows, **kwargs)
    if rec is None:
        raise InputError(f"recommendation: sweep {sweep_id[:8]} has fewer than 3 evaluated ratios (with 1:1:1 at the "
                         "last rung); wait for its evaluations or give --ratio")
    return rec


def ratio_to_confirm(rec) -> str:
    """The recommended (or candidate) ratio, or InputError when the study found none worth confirming (a ratio
    measured below 1:1:1 is never confirmed)."""
    if not rec.confirm or rec.ratio is None:
        raise InputError(f"confirm: nothing to confirm: {rec.headline} ({rec.reason}); give --ratio to confirm a "
                         "ratio of your choice anyway")
    return rec.ratio


MAX_PLANNED_SEEDS = 20
"""the most seeds per ratio a confirmation is sized to by default (more needs --seeds, said so)"""


def confirmation_seeds(stored: dict, planned: int | None = None) -> int:
    """Seeds per ratio of a confirmation by default: what the study's variance needs for its discounted gain
    (Recommendation.confirm_seeds), never fewer than the study used (nor 3), at most MAX_PLANNED_SEEDS."""
    floor = max(3, len(stored.get("seeds") or [0]))
    return min(MAX_PLANNED_SEEDS, max(floor, planned or 0))


def confirmation_spec(stored: dict, *, ratio: str, seeds: int | None = None, report_split: str | None = None,
                      planned: int | None = None, confirms: str | None = None):
    """The SweepSpec of the confirmation of `ratio` against 1:1:1 for a study stored as `stored` (normalised):
    `seeds` per ratio when given, else `confirmation_seeds(stored, planned)`."""
    from toolkit.study.sweep import SweepSpec

    ratio = str(Ratio.parse(ratio))
    old = list(stored.get("seeds") or [0])
    n = int(seeds) if seeds else confirmation_seeds(stored, planned)
    if n < 1 or n > 100:
        raise InputError(f"seeds: must be a whole number in 1..100, got {seeds}")
    split = report_split or (stored.get("search") or {}).get("report_split") or "test"
    ratios = tuple(dict.fromkeys([ratio, "1:1:1"]))
    return SweepSpec.from_normalised(
        {k: v for k, v in stored.items() if k not in ("design", "search")}, ratios=ratios,
        seeds=tuple(range(max(old) + 1, max(old) + 1 + n)), eval_split=split, confirms=confirms,
        name=f"{stored.get('name') or Path(str(stored['model']).rstrip('/')).name}-confirm")


def queue_confirmation(store: JobStore, sweep_id: str, *, ratio: str | None = None, seeds: int | None = None,
                       report_split: str | None = None):
    """Plan and queue the confirmation of the sweep's recommendation (or `ratio`): (plan, SubmitResult)."""
    from toolkit.study.sweep import plan_sweep, submit_sweep

    sweep_id = store.resolve_sweep(sweep_id)
    stored = stored_spec(store, sweep_id)
    rec = None
    if ratio is None or not seeds:
        try:
            rec = sweep_recommendation(store, sweep_id)
        except InputError:
            if ratio is None:
                raise
    if ratio is None:
        ratio = ratio_to_confirm(rec)
    # sized by the study's own variance when confirming its recommendation; a ratio of the user's choice has no
    # planned size (its gain was not the one estimated), so it gets the study's seed count
    planned = rec.confirm_seeds if rec is not None and rec.ratio == str(Ratio.parse(ratio)) else None
    plan = plan_sweep(confirmation_spec(stored, ratio=ratio, seeds=seeds, report_split=report_split,
                                        planned=planned, confirms=sweep_id))
    return plan, submit_sweep(plan, store=store)


def confirmation_state(store: JobStore, study: str, confirmation: str) -> dict | None:
    """The confirmation's outcome (toolkit.evaluation.recommendation.confirmation_outcome) from the study's and the
    confirmation's evaluations; "pending" while any job of the confirmation sweep is unfinished."""
    from toolkit.evaluation import recommendation

    # the study's evaluations and the confirmation's (another eval set, fresh seeds): recommend() finds both
    rec = recommendation.recommend(sweep_rows(store, study) + sweep_rows(store, confirmation), n_boot=1000)
    if rec is None:
        return None
    jobs = store.list(sweep=confirmation)
    unfinished = sum(1 for j in jobs if not j.state.finished)
    out = rec.confirmation
    if out is None:
        return {"state": "pending", "text": f"confirmation running: {unfinished} of {len(jobs)} job(s) unfinished"}
    if unfinished:
        out = {**out, "state": "pending", "text": f"{out['text']} ({unfinished} of {len(jobs)} job(s) unfinished)"}
    return out


# ------------------------------------------------------------------------------------------ controls

def control_specs(stored: dict, *, ratio: str, seeds: int | None = None, report_split: str | None = None,
                  structure=None) -> dict[str, object]:
    """The reviewer's controls of a confirmation, as SweepSpecs by label:

    - "lr control": uniform 1:1:1 ranks with the projector's learning rate scaled as `ratio` scales its rank
      (r_p(ratio) / r_p(1:1:1)): under Adam with alpha = 2r a larger rank is also a larger step, so a ratio's
      gain may be a learning-rate effect;
    - "alpha rslora" / "alpha fixed": `ratio` and 1:1:1 under the other alpha rules, alpha chosen so that the
      uniform arm's scaling equals alpha = 2r's (rsLoRA alpha = 2·sqrt(r0), fixed alpha = 2·r0).
    """
    from dataclasses import replace

    base = confirmation_spec(stored, ratio=ratio, seeds=seeds, report_split=report_split)
    first = base.job_settings(ratio=ratio, budget=base.budgets[0], seed=base.seeds[0])
    structure = structure or first.structure
    rec = first.allocation(structure).components["projector"].mean_rank
    uniform = base.job_settings(ratio="1:1:1", budget=base.budgets[0], seed=base.seeds[0]).allocation(structure)
    r0 = uniform.components["language"].mean_rank
    scale = rec / uniform.components["projector"].mean_rank
    out = {"lr control": replace(base, ratios=("1:1:1",), name=f"{base.name}-lrctl",
                                 base={**base.base, "lr_projector": min(first.lr * scale, 0.5)})}
    if first.alpha_rule == "scaled":
        for rule, alpha in (("rslora", round(2 * r0 ** 0.5, 4)), ("fixed", round(2 * r0, 4))):
            out[f"alpha {rule}"] = replace(base, base={**base.base, "alpha_rule": rule, "alpha_value": alpha},
                                           name=f"{base.name}-{rule}")
    return out


def queue_controls(store: JobStore, sweep_id: str, *, ratio: str, seeds: int | None = None,
                   report_split: str | None = None) -> dict[str, str]:
    """Queue every control of `control_specs` (idempotent); {label: sweep id}."""
    from toolkit.study.sweep import plan_sweep, submit_sweep

    out = {}
    for label, spec in control_specs(stored_spec(store, sweep_id), ratio=ratio, seeds=seeds,
                                     report_split=report_split).items():
        plan = plan_sweep(spec)
        out[label] = submit_sweep(plan, store=store).sweep_id
    return out


def _accuracies(store: JobStore, sweep_id: str) -> dict[str, list[float]]:
    by: dict[str, list[float]] = {}
    for r in sweep_rows(store, sweep_id):
        by.setdefault(r["ratio"], []).append(r["accuracy"])
    return by


def controls_report(store: JobStore, *, confirmation: str, controls: dict[str, str], ratio: str) -> list[dict]:
    """Does `ratio`'s advantage survive each control? {control, delta, ci, seeds, survives | None while running}.
    Δ is the recommended ratio minus the control's reference arm (1:1:1 under that rule, or the lr control),
    with a Welch t-interval over seeds."""
    from toolkit.evaluation.stats import t_quantile

    main = _accuracies(store, confirmation)
    out = []
    for label, sweep in controls.items():
        accs = _accuracies(store, sweep)
        if label == "lr control":
            a, b = main.get(ratio, []), accs.get("1:1:1", [])
        else:
            a, b = accs.get(ratio, []), accs.get("1:1:1", [])
        row = {"control": label, "sweep": sweep, "seeds": [len(a), len(b)], "delta": None, "ci": None,
               "survives": None}
        if len(a) >= 2 and len(b) >= 2:
            va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
            se = float(np.sqrt(va + vb))
            dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se > 0 else len(a) + len(b) - 2
            half = t_quantile(0.975, max(1, int(dof))) * se
            delta = float(np.mean(a) - np.mean(b))
            row.update(delta=round(delta, 3), ci=[round(delta - half, 3), round(delta + half, 3)],
                       survives=bool(delta - half > 0))
        out.append(row)
    return out
