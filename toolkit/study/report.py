"""One study followed from its design to its answer: what the Study page and `python -m toolkit study` show.

    rep = study_report(JobStore(), "90f53911")
    rep["final"]["text"]        # "confirmed: use 1:4:1, +4.88 points [...]", or the provisional recommendation
    rep["progress"]             # {"jobs", "unfinished", "counts", "ahead", "time_left"}: study + confirmation jobs

A study is a sweep (plain, designed, or a halving search) and the confirmation sweeps that name it
(`SweepSpec.confirms`, or a search's own record). The answer is *provisional* while any job of the study or of
its confirmation is unfinished: the recommendation can still change, so nothing should be published from it.
`final` is the confirmation's outcome when one has been evaluated, else the recommendation; its `state` is
"provisional" | "recommendation" (ended, nothing confirmed yet) | "confirmed" | "not confirmed" | "none" (no
answer: too few ratios evaluated).
"""

from __future__ import annotations

from dataclasses import asdict

from toolkit.errors import InputError
from toolkit.queue.store import JobStore
from toolkit.training.settings import model_defaults


def _confirms(w: dict, sweeps: list[dict]) -> str | None:
    """The study sweep `w` confirms: its spec's `confirms`, or, for a confirmation queued before that link existed,
    the newest earlier sweep of the same model, data, budgets and training settings whose name + '-confirm' is
    its name (how confirmation_spec names it)."""
    spec = w["spec"]
    if spec.get("confirms") or not str(spec.get("name") or "").endswith("-confirm"):
        return spec.get("confirms")
    same = ("model", "dataset", "budgets", "train")
    for other in sorted(sweeps, key=lambda o: o["created"], reverse=True):
        o = other["spec"]
        if (other["created"] <= w["created"] and other["id"] != w["id"] and all(o.get(k) == spec.get(k) for k in same)
                and f"{o.get('name') or str(o.get('model')).rstrip('/').split('/')[-1]}-confirm" == spec["name"]):
            return other["id"]
    return None


def confirmation_sweeps(store: JobStore, sweep_id: str, *, status: dict | None = None) -> list[str]:
    """Ids of the sweeps that confirm `sweep_id`, oldest first: those that name it (`_confirms`), and a halving
    search's own confirmation (recorded by the search; `status`: its halving.status when the caller has it)."""
    from toolkit.study import halving

    sweeps = store.sweeps()
    found = [w["id"] for w in sorted(sweeps, key=lambda w: w["created"]) if _confirms(w, sweeps) == sweep_id]
    status = halving.status(store, sweep_id) if status is None else status
    recorded = ((status or {}).get("confirmation") or {}).get("sweep")
    if recorded and recorded not in found:
        found.insert(0, recorded)
    return found


def studies(store: JobStore, sweeps: list[dict] | None = None) -> list[dict]:
    """Every sweep that is a study (not itself a confirmation), newest first, as `store.sweeps()` lists them."""
    sweeps = store.sweeps() if sweeps is None else sweeps
    return [w for w in sweeps if _confirms(w, sweeps) is None]


def _schedule(spec: dict) -> str:
    """'300 steps', '2 epochs' or 'one epoch': what every run of the sweep trains, the model's defaults resolved."""
    train = spec.get("train") or {}
    steps = train.get("max_steps") or (None if train.get("epochs") else
                                       model_defaults(str(spec.get("model") or ""))["max_steps"])
    if steps:
        return f"{steps:,} steps"
    epochs = train.get("epochs") or 1
    return "one epoch" if epochs == 1 else f"{epochs:g} epochs"


def design_summary(spec: dict) -> dict:
    """The plan of a stored sweep spec, in the words a reader wants: model, data, budget, arms, seeds, schedule."""
    search = spec.get("search") or {}
    budgets = [f"{kind} {value:g}" if isinstance(value, float) else f"{kind} {value}"
               for kind, value in spec.get("budgets") or []]
    return {"model": spec.get("model"), "dataset": spec.get("dataset"), "budget": ", ".join(budgets),
            "design": spec.get("design") or "ratios as given", "ratios": list(spec.get("ratios") or []),
            "seeds": list(spec.get("seeds") or []), "schedule": _schedule(spec),
            "search": (f"successive halving, rungs {', '.join(map(str, search.get('rungs') or []))} steps"
                       if search else None),
            "eval": f"split '{spec.get('eval_split')}'" + (f", first {spec['eval_limit']:,} questions"
                                                          if spec.get("eval_limit") else "")}


def study_report(store: JobStore, sweep_id: str, *, recommend: bool = True, history=None, slots: int = 1,
                 n_boot: int | None = None) -> dict:
    """The study `sweep_id` (an id or a prefix): design, progress, rungs, recommendation, confirmation, final
    answer (see the module docstring). `recommend=False` skips the analysis (the page's fast refresh);
    `history`: RunRecords for the time left (toolkit.study.estimate.measured_here), none = not estimated."""
    from toolkit.study import halving
    from toolkit.study.confirm import confirmation_state, stored_spec, sweep_recommendation
    from toolkit.study.estimate import queued_ahead, queues_rungs, time_left

    sweep_id = store.resolve_sweep(sweep_id)
    spec = stored_spec(store, sweep_id)
    search = halving.status(store, sweep_id)
    confirmations = confirmation_sweeps(store, sweep_id, status=search or {})
    jobs = store.list(sweep=sweep_id)
    conf_jobs = [j for c in confirmations for j in store.list(sweep=c)]
    everyone = jobs + conf_jobs
    counts: dict[str, int] = {}
    for j in everyone:
        counts[j.state.value] = counts.get(j.state.value, 0) + 1
    unfinished = [j for j in everyone if not j.state.finished]
    ahead = queued_ahead(store, everyone) if unfinished else []
    left = None
    if unfinished and history is not None:
        est = time_left(everyone, history, slots=slots, ahead=ahead)
        left = est.left_text(search=queues_rungs(spec)) if est else None
    design = design_summary(spec)
    trained = {r for j in jobs if j.meta.get("kind") != "reference" for r in str(j.meta.get("ratio") or "").split(",")}
    # a design's arms the calculator could not budget-match were left out when it was planned (the plan said why)
    design["left_out"] = [r for r in design["ratios"] if jobs and r not in trained]
    out = {"sweep": sweep_id, "name": spec.get("name"), "design": design,
           "progress": {"jobs": len(everyone), "unfinished": len(unfinished), "counts": counts, "ahead": len(ahead),
                        "time_left": left},
           "search": search, "confirmations": confirmations,
           "recommendation": None, "recommendation_error": None, "confirmation": None}
    rec = None
    if recommend:
        try:
            rec = sweep_recommendation(store, sweep_id, **({} if n_boot is None else {"n_boot": n_boot}))
        except InputError as exc:
            out["recommendation_error"] = str(exc)
    if rec is not None:
        doc = asdict(rec)
        out["recommendation"] = doc
        if confirmations:
            out["confirmation"] = confirmation_state(store, sweep_id, confirmations[-1])
    out["final"] = final_answer(out, provisional=bool(unfinished), recommended=recommend)
    return out


def final_answer(report: dict, *, provisional: bool, recommended: bool = True) -> dict:
    """{state, text} of a report (see the module docstring)."""
    rec, conf = report.get("recommendation"), report.get("confirmation") or {}
    n = report["progress"]["unfinished"]
    if provisional:
        what = (f"; so far: {rec['headline']}" if rec else "") if recommended else ""
        return {"state": "provisional", "text": f"provisional: {n} job(s) of the study and its confirmation are "
                                                f"unfinished{what}"}
    if conf.get("state") in ("confirmed", "not confirmed"):
        return {"state": conf["state"], "text": conf["text"]}
    if rec:
        tail = ("" if not rec.get("confirm") else
                f"; not confirmed yet: `python -m toolkit confirm --sweep {report['sweep'][:8]}` queues "
                f"{rec.get('confirm_seeds') or 'the'} fresh seed(s) per ratio")
        return {"state": "recommendation", "text": rec["headline"] + tail}
    return {"state": "none", "text": report.get("recommendation_error") or "no recommendation"}
