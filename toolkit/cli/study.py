"""CLI commands of studies: `study` (one study from design to answer, toolkit.study.report), `search` (a halving
search's rungs, survivors and recommendation), `confirm` (queue the recommended ratio and 1:1:1 with fresh seeds on
the report split), and `retrieval` (the alignment metric of one adapter or base model, toolkit.evaluation.retrieval).

    python -m toolkit study [--sweep 90f53911] [--json]          # default: the newest study
    python -m toolkit search --sweep 90f53911 [--json]
    python -m toolkit confirm --sweep 90f53911 [--ratio 2:4:1] [--seeds 3] [--report-split test] [--json]
    python -m toolkit retrieval --adapter DIR | --base demo [--dataset synthetic:shapes] [--limit 50] [--json]
"""

# ruff: noqa: T201  (a CLI module: printing is its job)

from __future__ import annotations

import json

from toolkit.errors import InputError
from toolkit.queue.store import JobStore


def _store(args):
    store = JobStore(args.jobs_dir) if getattr(args, "jobs_dir", None) else JobStore()
    return store, store.resolve_sweep(args.sweep)


def print_recommendation(rec: dict, confirmation: dict | None = None) -> None:
    """The study's answer: its outcome and reason, how it was reached, and the confirmation's outcome."""
    if "outcome" not in rec:  # a search recorded before the three outcomes
        print(f"recommended ratio {rec.get('ratio')} (recorded by an earlier version; `compare` gives today's answer)")
        return
    print(f"recommendation: {rec['headline']}")
    print(f"  why: {rec['reason']}")
    if rec.get("optimum"):
        print(f"  fitted optimum v:p:l = {':'.join(f'{x:.2f}' for x in rec['optimum'])}; region the data cannot "
              "tell from it: " + ", ".join(f"{c} {a:.2f}-{b:.2f}" for c, (a, b) in rec["proportion_ci"].items()))
    print(f"  method: {rec['model']} ({rec['method']}), {rec['n_runs']} runs, {rec['n_arms']} ratios tried"
          + (f", lack-of-fit p {rec['lack_of_fit_p']:.3f}" if rec.get("lack_of_fit_p") is not None else "")
          + f"; interval multiplier {rec['critical']:.2f} (selection-adjusted)")
    conf = confirmation or rec.get("confirmation")
    if conf:
        print(f"  {conf['text']}")
    elif rec["confirm"]:
        print(f"  confirmation: not run yet ({rec['confirm_reason']}); `python -m toolkit confirm --sweep ID` queues it")


def cmd_study(args) -> int:
    from toolkit.queue.worker import slots_here
    from toolkit.study import estimate, report

    store = JobStore(args.jobs_dir) if args.jobs_dir else JobStore()
    if args.sweep:
        sweep_id = store.resolve_sweep(args.sweep)
    else:
        found = report.studies(store)
        if not found:
            raise InputError("sweep: no study in this job store yet (queue one with `python -m toolkit sweep`)")
        sweep_id = found[0]["id"]
    rep = report.study_report(store, sweep_id, history=estimate.measured_here(store), slots=slots_here())
    if args.json:
        print(json.dumps(rep, indent=2, default=str))
        return 0
    d, p = rep["design"], rep["progress"]
    print(f"study {sweep_id[:8]}{' (' + rep['name'] + ')' if rep['name'] else ''} · {d['model']} on {d['dataset']} "
          f"· budget {d['budget']}")
    arms = [r for r in d["ratios"] if r not in d["left_out"]]
    print(f"  design: {d['design']}: {len(arms)} ratios ({', '.join(arms)}) × seeds "
          f"{', '.join(map(str, d['seeds']))}, {d['schedule']}"
          + (f"; {d['search']}" if d["search"] else "") + f"; evaluated on {d['eval']}"
          + (f"; left out when planned (the calculator cannot budget-match them): {', '.join(d['left_out'])}"
             if d["left_out"] else ""))
    counts = ", ".join(f"{n} {state}" for state, n in sorted(p["counts"].items()))
    print(f"  jobs: {p['jobs']} ({counts})" + (f"; time left: {p['time_left']}" if p["time_left"] else ""))
    for c in rep["confirmations"]:
        print(f"  confirmation sweep: {c[:8]}")
    search = rep["search"] or {}
    for arm, text in sorted((search.get("arms") or {}).items()):
        print(f"  {arm:<10} {text}")
    if rep["recommendation"]:
        print_recommendation(rep["recommendation"], rep["confirmation"])
    print(f"answer: {rep['final']['text']}")
    return 0


def cmd_search(args) -> int:
    from toolkit.study import halving

    store, sweep_id = _store(args)
    st = halving.status(store, sweep_id, controls=True)
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
        print_recommendation(st["recommendation"], (st.get("confirmation") or {}).get("outcome"))
    for c in st.get("controls") or []:
        verdict = {None: "not evaluated yet", True: "survives", False: "does not survive"}[c["survives"]]
        delta = "" if c["delta"] is None else f": Δ {c['delta']:+.2f}, 95% CI [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}]"
        print(f"control {c['control']} (sweep {c['sweep'][:8]}): the advantage {verdict}{delta}")
    if st.get("confirmation"):
        c = st["confirmation"]
        outcome = (c.get("outcome") or {}).get("state")
        print(f"confirmation: {c['error']}" if "error" in c else f"confirmation: {c['skipped']}" if "skipped" in c else
              f"confirmation sweep {c['sweep'][:8]}, {', '.join(c['ratios'])} × seeds "
              f"{', '.join(map(str, c['seeds']))} on split {c['split']}: {outcome or 'queued'}")
    return 0


def cmd_confirm(args) -> int:
    from toolkit.study.confirm import queue_confirmation

    store, sweep_id = _store(args)
    from toolkit.calculator.spec import Ratio
    from toolkit.study.confirm import queue_controls

    ratio = str(Ratio.parse(args.ratio)) if args.ratio else None
    plan, result = queue_confirmation(store, sweep_id, ratio=ratio, seeds=args.seeds, report_split=args.report_split)
    ratio = next((r for r in plan.spec.ratios if r != "1:1:1"), "1:1:1")  # the spec sorts its ratios
    controls = {}
    if args.controls and ratio != "1:1:1":
        controls = queue_controls(store, sweep_id, ratio=ratio, seeds=args.seeds, report_split=args.report_split)
    if not args.no_worker and not args.json:
        from toolkit.queue.lifecycle import ensure_worker

        ensure_worker()
    doc = {"sweep": plan.sweep_id, "created": result.created, "ratio": ratio, "ratios": list(plan.spec.ratios),
           "seeds": list(plan.spec.seeds), "split": plan.spec.eval_split, "jobs": [j.id for j in result.jobs],
           "controls": controls}
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"{'queued' if result.created else 'already queued'}: confirmation sweep {plan.short_id} · "
              f"{', '.join(doc['ratios'])} × seeds {', '.join(map(str, doc['seeds']))} · evaluated on {doc['split']} "
              f"· {len(result.jobs)} job(s); compare them with `python -m toolkit compare --dataset "
              f"<that eval set>` once done")
        for label, sweep in controls.items():
            print(f"control {label}: sweep {sweep[:8]}")
    return 0


def _seeds(text):
    try:
        return int(text)
    except ValueError:
        raise InputError(f"'{text}' is not a whole number") from None


def register(sub) -> None:
    p = sub.add_parser("study", help="one study from design to answer: plan, progress, rungs, recommendation, "
                                     "confirmation, and the answer (provisional while any job is unfinished)")
    p.add_argument("--sweep", help="the study's sweep id or a prefix (default: the newest study)")
    p.add_argument("--jobs-dir", metavar="DIR", help="job store folder (default jobs/ or $CMBA_JOBS_DIR)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("search", help="a halving search's rungs, survivors, recommendation and confirmation")
    p.add_argument("--sweep", required=True, help="the search's sweep id (or a prefix)")
    p.add_argument("--jobs-dir", metavar="DIR", help="job store folder (default jobs/ or $CMBA_JOBS_DIR)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("confirm", help="queue the recommended ratio and 1:1:1 with fresh seeds on the report split")
    p.add_argument("--sweep", required=True, help="the study's sweep id (or a prefix)")
    p.add_argument("--ratio", help="confirm this ratio instead of the fitted recommendation")
    p.add_argument("--seeds", type=_seeds, help="fresh seeds per ratio (default: what the study's seed "
                   "variance needs for 80%% power at a discounted gain, at least the study's count and 3, at most 20)")
    p.add_argument("--report-split", help="the split both are evaluated on (default: the search's, else test)")
    p.add_argument("--controls", action="store_true", help="also queue the learning-rate control and the "
                   "alpha-rule axis (rsLoRA, fixed alpha) for the same ratio")
    p.add_argument("--jobs-dir", metavar="DIR", help="job store folder (default jobs/ or $CMBA_JOBS_DIR)")
    p.add_argument("--no-worker", action="store_true", help="queue only; do not start a background worker")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_confirm)
    _register_retrieval(sub)


def cmd_retrieval(args) -> int:
    from toolkit.evaluation.retrieval import evaluate_retrieval

    columns = dict(item.split("=", 1) for item in (args.columns or "").split(",") if "=" in item)
    doc = evaluate_retrieval(adapter=args.adapter, base=args.base, dataset=args.dataset, split=args.split,
                             limit=args.limit, columns=columns, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    who = doc["adapter"] or f"{doc['model']} (base model)"
    print(f"image-text retrieval of {who} on {doc['dataset']['id']} {doc['dataset']['split']} "
          f"({doc['dataset']['n']} pairs, {doc['time_s']:.1f} s)")
    for direction, recall in doc["recall"].items():
        print(f"  {direction.replace('_', ' '):<14} " + "  ".join(f"{k} {v:6.2f}%" for k, v in recall.items()))
    print(f"written to {doc['path']}")
    return 0


def _register_retrieval(sub) -> None:
    p = sub.add_parser("retrieval", help="cross-modal alignment: image-text retrieval Recall@1/5/10 both ways",
                       description="Score every caption against every image by the model's mean caption "
                                   "log-likelihood; Recall@1/5/10 image->text and text->image.")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--adapter", metavar="DIR", help="a trained adapter folder")
    who.add_argument("--base", metavar="MODEL", help="the base model alone (the reference row)")
    p.add_argument("--dataset", default="synthetic:shapes", help="synthetic:shapes or an image-caption dataset")
    p.add_argument("--split", default="validation")
    p.add_argument("--limit", type=_seeds, default=50, help="image-caption pairs N (N x N scores; default 50)")
    p.add_argument("--columns", help="column mapping, e.g. image=img,caption=sentences")
    p.add_argument("--batch-size", type=_seeds, default=32)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_retrieval)
