"""Successive halving over a sweep's arms at a fixed compute budget, run by the job system.

    python -m toolkit sweep --model demo --dataset synthetic:shapes --design simplex-lattice:3 --search halving \\
        --rungs 100,200,300 --eta 2 --max-steps 300 --seeds 2 --budget-rank 8 --holdout 0.1 --eval-split train

    s = Search.parse("halving", max_steps=300)      # toolkit.study.search: rungs 75, 150, 300 (eta 2), z = 1.96
    decide({"1:1:1": [60.1, 61.0], "0:0:1": [40.2, 41.0]}, eta=2)     # toolkit.study.selection: the rule
    advance(store, sweep_id)                         # the controller: idempotent, called through the hook
    on_rung_job_finished(store, job)                 # the hook every rung job names (meta["on_finish"])
    status(store, sweep_id)                          # rungs, survivors and why each arm stopped (jobs page, CLI)

Every arm (with its seeds) trains to the first rung's step of the full schedule (toolkit.study.rung: the
learning-rate schedule is the full run's, so stopping early and continuing is exact), and is evaluated on the
selection split. When every job of a rung has finished, `advance` ranks the arms by mean accuracy over seeds
and keeps the better 1/eta; the others are dropped only when they are behind the weakest kept arm by more
than z standard errors of the difference (standard error over seeds, never less than the one over questions),
so arms within noise of the cut survive. Survivors continue from their checkpoints to the next rung as new
jobs of the same sweep (ids `<sweep>-k<rung>-NN`), and so on to the last rung (= max steps).

The controller is a function of the store alone. Every rung job names `on_rung_job_finished` as its follow-up
hook (toolkit.queue.hooks): the worker calls it once the job has ended, and a recovery pass calls it for jobs
that ended with no worker to follow them up, so a restarted worker (local or Slurm) picks the search up where it
was;
queueing a rung twice is impossible (fixed job ids, inserted once). Its decisions are kept in
`<jobs folder>/halving/<sweep id>.json` (written atomically), which `status` reads.
"""

from __future__ import annotations

from pathlib import Path

from toolkit import runs
from toolkit.errors import InputError
from toolkit.queue.states import JobState
from toolkit.queue.store import JobStore, NewJob
from toolkit.study.search import Search, rung_steps
from toolkit.study.selection import folder_score, pooled, rung_entry

# ------------------------------------------------------------------------------------------ the job system

def record_path(store: JobStore, sweep_id: str) -> Path:
    return Path(store.folder) / "halving" / f"{sweep_id}.json"


def _scores(jobs) -> tuple[dict[str, list[float]], dict[str, float], dict[str, str]]:
    """Per arm: accuracies of its succeeded jobs, the question-level SE, and why arms have none."""
    scores: dict[str, list[float]] = {}
    qse: dict[str, list[float]] = {}
    missing: dict[str, str] = {}
    for job in jobs:
        arm = job.meta["ratio"]
        if job.state != JobState.SUCCEEDED:
            missing.setdefault(arm, f"{job.name}: {job.state.value}{' (' + job.reason + ')' if job.reason else ''}")
            continue
        folder = job.meta["adapter"]
        found = folder_score(folder)
        if found is None:
            missing.setdefault(arm, f"{job.name}: no evaluation in {folder}")
            continue
        scores.setdefault(arm, []).append(found[0])
        if found[1] is not None:
            qse.setdefault(arm, []).append(found[1])
    return scores, pooled(scores, qse), missing


def advance(store: JobStore, sweep_id: str) -> dict | None:
    """Decide the newest finished rung of a halving sweep and queue its survivors' next rung (idempotent).
    Returns the search's record, or None for a sweep without a search or a rung still running."""
    spec = store.sweep_spec(sweep_id)
    if not spec or not spec.get("search"):
        return None
    search = Search.parse(spec["search"], max_steps=spec["search"]["rungs"][-1])
    jobs = [j for j in store.list(sweep=sweep_id) if j.meta.get("kind", "train") == "train" and "rung" in j.meta]
    if not jobs:
        return None
    rung = max(j.meta["rung"] for j in jobs)
    current = [j for j in jobs if j.meta["rung"] == rung]
    if not all(j.state.finished for j in current):
        return None
    path = record_path(store, sweep_id)
    record = runs.read_json(path) if path.exists() else {"sweep": sweep_id, "search": search.to_dict(), "rungs": []}
    last = rung == len(search.rungs)
    entry = next((r for r in record["rungs"] if r["rung"] == rung), None)
    if entry is None:  # decide once; the decision is written before anything is queued from it
        scores, qse, missing = _scores(current)
        entry = rung_entry(scores, qse, search=search, rung=rung, missing=missing)
        record["rungs"].append(entry)
        path.parent.mkdir(parents=True, exist_ok=True)
        runs.write_json(path, record)
    if not last:  # (again, after a crash between the decision and the queueing: fixed ids, inserted once)
        _queue_next(store, sweep_id, search, rung, current, {d["arm"] for d in entry["decisions"] if d["keep"]})
    elif search.confirm and "confirmation" not in record:
        _confirm(store, sweep_id, record, path)
    return record


def _queue_next(store: JobStore, sweep_id: str, search: Search, rung: int, current, kept: set[str]) -> None:
    """The survivors' jobs of rung `rung + 1`: the same run folders and settings, trained on to the next step."""
    new = []
    until = search.rungs[rung]
    for j in sorted((j for j in current if j.meta["ratio"] in kept and j.state == JobState.SUCCEEDED),
                    key=lambda j: j.id):
        steps, adapter = rung_steps(j.settings["train"], j.settings.get("evaluate"), until=until, python=j.steps[0][0],
                                    retrieval=tuple(tuple(x) for x in j.meta.get("retrieval_steps") or ()))
        base_id = j.meta.get("first_id", j.id)
        new.append(NewJob(id=f"{sweep_id[:8]}-k{rung + 1}-{base_id.rsplit('-', 1)[-1]}",
                          name=f"{j.meta.get('base_name', j.name)}-k{rung + 1}", steps=steps,
                          output_dir=j.output_dir, gpus=j.gpus, max_attempts=j.max_attempts, executor=j.executor,
                          resources=j.resources, settings=j.settings,
                          meta={**j.meta, "rung": rung + 1, "until": until, "adapter": adapter,
                                "first_id": base_id, "base_name": j.meta.get("base_name", j.name)}))
    store.add_to_sweep(sweep_id, new)


def _confirm(store: JobStore, sweep_id: str, record: dict, path: Path) -> None:
    """Recommend from every rung's evaluations and queue the confirmation; the outcome goes into the record."""
    from toolkit.study.confirm import queue_confirmation, sweep_recommendation

    try:
        rec = sweep_recommendation(store, sweep_id)
        record["recommendation"] = {k: v for k, v in rec.to_dict().items() if k not in ("surface", "region")}
        if not rec.confirm or rec.ratio is None:  # never confirm a ratio measured below 1:1:1
            record["confirmation"] = {"skipped": f"nothing to confirm: {rec.headline}"}
            runs.write_json(path, record)
            return
        plan, result = queue_confirmation(store, sweep_id, ratio=rec.ratio)
        record["confirmation"] = {"sweep": plan.sweep_id, "ratio": rec.ratio, "ratios": list(plan.spec.ratios),
                                  "seeds": list(plan.spec.seeds), "split": plan.spec.eval_split,
                                  "jobs": len(result.jobs)}
        if (record.get("search") or {}).get("controls") and rec.ratio != "1:1:1":
            from toolkit.study.confirm import queue_controls

            record["controls"] = queue_controls(store, sweep_id, ratio=rec.ratio,
                                                report_split=record["search"].get("report_split"))
    except InputError as exc:
        record["confirmation"] = {**record.get("confirmation", {}), "error": str(exc)}
    runs.write_json(path, record)


def on_rung_job_finished(store: JobStore, job) -> None:
    """The follow-up hook of a rung job (named in its meta, toolkit.study.search.RUNG_HOOK): advance its search."""
    if job.sweep_id:
        advance(store, job.sweep_id)


def on_pack_search_finished(store: JobStore, job) -> None:
    """The follow-up hook of a pack job with a search inside it (toolkit.study.packsearch, which writes the rungs
    into the same record): once its final rung is recorded, recommend and queue the confirmation, once."""
    if not job.sweep_id:
        return
    path = record_path(store, job.sweep_id)
    if not path.exists():
        return
    record = runs.read_json(path)
    search = Search.parse(record["search"], max_steps=record["search"]["rungs"][-1])
    if any(r["final"] for r in record["rungs"]) and search.confirm and "confirmation" not in record:
        _confirm(store, job.sweep_id, record, path)


def advance_all(store: JobStore) -> None:
    """`advance` every halving sweep (the worker's recovery pass: restarts lose nothing)."""
    for s in store.sweeps():
        if s["spec"].get("search"):
            advance(store, s["id"])


def status(store: JobStore, sweep_id: str, *, controls: bool = False) -> dict | None:
    """{"search", "rungs": [{rung, steps, final, decisions, failed}], "arms": {arm: state text}} or None; with
    `controls`, also the confirmation's outcome and "controls": whether the advantage survives them (both scan the
    adapter store: the CLI's report, not the app's 2-s panel, whose Compare page shows the outcome)."""
    spec = store.sweep_spec(sweep_id)
    if not spec or not spec.get("search"):
        return None
    path = record_path(store, sweep_id)
    record = runs.read_json(path) if path.exists() else {"rungs": []}
    arms: dict[str, str] = {}
    for entry in record["rungs"]:
        for d in entry["decisions"]:
            if entry["final"]:
                arms[d["arm"]] = f"finished all {entry['steps']} steps: {d['mean']:.2f}% ± {d['se']:.2f}"
            elif d["keep"]:
                arms[d["arm"]] = f"survived rung {entry['rung']} ({d['reason']})"
            else:
                arms[d["arm"]] = f"stopped at rung {entry['rung']} ({entry['steps']} steps): {d['reason']}"
        for f in entry["failed"]:
            arms[f["arm"]] = f"stopped at rung {entry['rung']}: its jobs failed ({f['reason']})"
    out = {"search": spec["search"], "rungs": record["rungs"], "arms": arms,
           "recommendation": record.get("recommendation"), "confirmation": record.get("confirmation")}
    conf = record.get("confirmation") or {}
    if controls and conf.get("sweep") and record.get("recommendation"):  # scans the store: not for the 2-s panel
        from toolkit.study.confirm import confirmation_state

        out["confirmation"] = {**conf, "outcome": confirmation_state(store, sweep_id, conf["sweep"])}
    if controls and record.get("controls") and conf.get("sweep"):
        from toolkit.study.confirm import controls_report

        out["controls"] = controls_report(store, confirmation=conf["sweep"], controls=record["controls"],
                                          ratio=conf["ratio"])
    return out
