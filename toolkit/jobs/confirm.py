"""Confirmation of a study's recommendation: the recommended ratio and uniform 1:1:1, fresh seeds, full schedule,
evaluated on the report split, queued as one ordinary sweep (so `compare` and its verdict rules decide).

    python -m toolkit confirm --sweep 90f53911 [--ratio 2:4:1] [--seeds 3] [--report-split test] [--json]
    rec = sweep_recommendation(store, sweep_id)        # the fitted recommendation from the sweep's evaluations
    plan, result = queue_confirmation(store, sweep_id)  # idempotent: the same confirmation is queued once

The confirmation sweep copies every setting of the study's sweep (model, data, budget, training) except the
ratios (recommended + 1:1:1), the seeds (new ones, after the study's), the evaluated split (`report_split`,
default the study's `search.report_split`, else "test") and the design/search (every arm trains fully).
"""

from __future__ import annotations

from toolkit.calculator.spec import Budget, Ratio
from toolkit.errors import InputError
from toolkit.jobs.store import JobStore


def stored_spec(store: JobStore, sweep_id: str) -> dict:
    for s in store.sweeps():
        if s["id"] == sweep_id:
            return s["spec"]
    raise InputError(f"sweep: no sweep '{sweep_id}' (see `python -m toolkit jobs list`)")


def sweep_rows(store: JobStore, sweep_id: str) -> list[dict]:
    """compare.scan rows of the adapters this sweep trained (every rung's snapshots and final runs)."""
    from pathlib import Path

    from toolkit.evaluation import compare

    folders = set()
    for job in store.list(sweep=sweep_id):
        for path in (job.meta.get("adapter"), job.output_dir):
            if path:
                folders.add(str(Path(path).resolve()))
    roots = {str(Path(f).parent) for f in folders}
    return [r for root in sorted(roots) for r in compare.scan(root).rows if str(Path(r["path"]).resolve()) in folders]


def sweep_recommendation(store: JobStore, sweep_id: str, *, n_boot: int | None = None):
    """The study's Recommendation from the sweep's own evaluations, or InputError when it cannot be fitted."""
    from toolkit.evaluation import surface

    rows = sweep_rows(store, sweep_id)
    kwargs = {} if n_boot is None else {"n_boot": n_boot}
    rec = surface.recommend(rows, **kwargs)
    if rec is None:
        raise InputError(f"recommendation: sweep {sweep_id[:8]} has fewer than 3 evaluated ratios; wait for its "
                         "evaluations or give --ratio")
    return rec


def confirmation_spec(stored: dict, *, ratio: str, seeds: int | None = None, report_split: str | None = None):
    """The SweepSpec of the confirmation of `ratio` against 1:1:1 for a study stored as `stored` (normalised)."""
    from toolkit.jobs.sweep import SweepSpec

    ratio = str(Ratio.parse(ratio))
    old = list(stored.get("seeds") or [0])
    n = int(seeds) if seeds else max(3, len(old))
    if n < 1 or n > 100:
        raise InputError(f"seeds: must be a whole number in 1..100, got {seeds}")
    split = report_split or (stored.get("search") or {}).get("report_split") or "test"
    keep = {k: v for k, v in stored.items() if k in SweepSpec.__dataclass_fields__ and k not in (
        "ratios", "budgets", "seeds", "design", "search", "eval_split", "name")}
    train = dict(keep.pop("train", {}) or {})
    ratios = tuple(dict.fromkeys([ratio, "1:1:1"]))
    return SweepSpec(**keep, train=train, ratios=ratios, budgets=tuple(Budget(k, v) for k, v in stored["budgets"]),
                     seeds=tuple(range(max(old) + 1, max(old) + 1 + n)), eval_split=split,
                     name=f"{stored.get('name') or 'confirm'}-confirm")


def queue_confirmation(store: JobStore, sweep_id: str, *, ratio: str | None = None, seeds: int | None = None,
                       report_split: str | None = None):
    """Plan and queue the confirmation of the sweep's recommendation (or `ratio`): (plan, SubmitResult)."""
    from toolkit.jobs.sweep import plan_sweep, submit_sweep

    sweep_id = store.resolve_sweep(sweep_id)
    stored = stored_spec(store, sweep_id)
    if ratio is None:
        ratio = sweep_recommendation(store, sweep_id).ratio
    plan = plan_sweep(confirmation_spec(stored, ratio=ratio, seeds=seeds, report_split=report_split))
    return plan, submit_sweep(plan, store=store)
