"""CLI commands of designed studies: `search` (a halving search's rungs, survivors and recommendation) and
`confirm` (queue the recommended ratio and 1:1:1 with fresh seeds on the report split).

    python -m toolkit search --sweep 90f53911 [--json]
    python -m toolkit confirm --sweep 90f53911 [--ratio 2:4:1] [--seeds 3] [--report-split test] [--json]
"""

# ruff: noqa: T201  (a CLI module: printing is its job)

from __future__ import annotations

import json

from toolkit.errors import InputError


def _store(args):
    from toolkit.jobs.store import JobStore

    store = JobStore(args.jobs_dir) if getattr(args, "jobs_dir", None) else JobStore()
    return store, store.resolve_sweep(args.sweep)


def print_recommendation(rec: dict) -> None:
    lo, hi = rec["gain_ci"]
    print(f"recommended ratio {rec['ratio']} (optimum v:p:l = "
          f"{':'.join(f'{x:.2f}' for x in rec['optimum'])}; 95% region "
          + ", ".join(f"{c} {a:.2f}-{b:.2f}" for c, (a, b) in rec["proportion_ci"].items()) + ")")
    print(f"predicted {rec['predicted']:.2f}% vs uniform {rec['uniform']:.2f}%: gain {rec['gain']:+.2f} points, "
          f"95% CI [{lo:+.2f}, {hi:+.2f}] ({rec['model']}, R² {rec['r2']:.2f}, {rec['n_runs']} runs, "
          f"{rec['n_ratios']} ratios, {rec['n_boot']} bootstrap refits)")
    print(f"confirmation {'needed' if rec['confirm'] else 'not needed'}: {rec['confirm_reason']}")


def cmd_search(args) -> int:
    from toolkit.jobs import halving

    store, sweep_id = _store(args)
    st = halving.status(store, sweep_id)
    if st is None:
        raise InputError(f"sweep: {sweep_id[:8]} is not a search (queue one with sweep --search halving)")
    if args.json:
        print(json.dumps(st, indent=2, default=str))
        return 0
    s = st["search"]
    print(f"sweep {sweep_id[:8]} · successive halving · rungs {', '.join(map(str, s['rungs']))} steps · "
          f"eta {s['eta']:g} · drop only beyond {s['z']:g} SE")
    for entry in st["rungs"]:
        kept = [d["arm"] for d in entry["decisions"] if d["keep"]]
        print(f"rung {entry['rung']} ({entry['steps']} steps): {len(entry['decisions'])} arms"
              + ("" if entry["final"] else f", {len(kept)} continue: {', '.join(kept)}"))
    for arm, text in sorted(st["arms"].items()):
        print(f"  {arm:<10} {text}")
    if st.get("recommendation"):
        print_recommendation(st["recommendation"])
    if st.get("confirmation"):
        c = st["confirmation"]
        print(f"confirmation: {c['error']}" if "error" in c else
              f"confirmation queued: sweep {c['sweep'][:8]}, {', '.join(c['ratios'])} × seeds "
              f"{', '.join(map(str, c['seeds']))} on split {c['split']}")
    return 0


def cmd_confirm(args) -> int:
    from toolkit.jobs.confirm import queue_confirmation

    store, sweep_id = _store(args)
    plan, result = queue_confirmation(store, sweep_id, ratio=args.ratio, seeds=args.seeds,
                                      report_split=args.report_split)
    if not args.no_worker and not args.json:
        from toolkit.jobs.worker import ensure_worker

        ensure_worker()
    doc = {"sweep": plan.sweep_id, "created": result.created, "ratios": list(plan.spec.ratios),
           "seeds": list(plan.spec.seeds), "split": plan.spec.eval_split, "jobs": [j.id for j in result.jobs]}
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"{'queued' if result.created else 'already queued'}: confirmation sweep {plan.short_id} · "
              f"{', '.join(doc['ratios'])} × seeds {', '.join(map(str, doc['seeds']))} · evaluated on {doc['split']} "
              f"· {len(result.jobs)} job(s); compare them with `python -m toolkit compare --dataset "
              f"<that eval set>` once done")
    return 0


def _seeds(text):
    try:
        return int(text)
    except ValueError:
        raise InputError(f"seeds: '{text}' is not a whole number") from None


def register(sub) -> None:
    p = sub.add_parser("search", help="a halving search's rungs, survivors, recommendation and confirmation")
    p.add_argument("--sweep", required=True, help="the search's sweep id (or a prefix)")
    p.add_argument("--jobs-dir", metavar="DIR", help="job store folder (default jobs/ or $CMBA_JOBS_DIR)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("confirm", help="queue the recommended ratio and 1:1:1 with fresh seeds on the report split")
    p.add_argument("--sweep", required=True, help="the study's sweep id (or a prefix)")
    p.add_argument("--ratio", help="confirm this ratio instead of the fitted recommendation")
    p.add_argument("--seeds", type=_seeds, help="fresh seeds per ratio (default: max(3, the study's))")
    p.add_argument("--report-split", help="the split both are evaluated on (default: the search's, else test)")
    p.add_argument("--jobs-dir", metavar="DIR", help="job store folder (default jobs/ or $CMBA_JOBS_DIR)")
    p.add_argument("--no-worker", action="store_true", help="queue only; do not start a background worker")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_confirm)
