"""Commands of the job system: `jobs list|show|cancel|retry|logs`, `worker` (queueing a sweep: toolkit.cli.sweep).

    python -m toolkit jobs list [--sweep ID] [--json]     # with --sweep: the time left
    python -m toolkit jobs show ID [--json] | cancel ID | retry ID | logs ID [--tail N] [--follow]
    python -m toolkit jobs cancel --sweep SWEEP | retry --sweep SWEEP     # every job of a sweep
    python -m toolkit worker [--slots N] [--gpus 0,1|auto|none] [--once] [--poll S]

"""

from __future__ import annotations

import argparse
import json
import sys
import time

from toolkit.cli.flags import number
from toolkit.errors import InputError


def _out(text: str = "") -> None:
    print(text)  # noqa: T201 - a CLI prints


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


# ------------------------------------------------------------------------------------------- jobs

def _progress_text(p: dict) -> str:
    if p["step"] is not None and p["max_steps"]:
        text = f"{p['step']}/{p['max_steps']}"
        if p["loss"] is not None:
            text += f" loss {p['loss']:.4g}"
        if p["state"] == "running" and p["eta_s"] is not None:
            text += f" eta {_age(p['eta_s'])}"
        return text
    return ""


def cmd_jobs_list(args) -> int:
    from toolkit.queue.store import JobStore
    from toolkit.study.progress import job_progress

    store = JobStore()
    sweep = store.resolve_sweep(args.sweep) if args.sweep else None
    jobs = store.list(sweep=sweep)
    progress = [job_progress(j, log_lines=0) for j in jobs]
    if args.json:
        for p in progress:
            p.pop("log_tail")
        _out(json.dumps(progress, indent=2))
        return 0
    if not jobs:
        _out("no jobs" + (f" in sweep {args.sweep}" if args.sweep else ""))
        return 0
    _out(f"{'id':<12} {'state':<10} {'phase':<9} {'name':<36} {'progress':<28} reason")
    for p in progress:
        phase = p["phase"] if p["state"] == "running" else ""
        _out(f"{p['id']:<12} {p['state']:<10} {phase:<9} {p['name']:<36} {_progress_text(p):<28} {p['reason'] or ''}")
        for a in p["arms"]:  # a pack's arms under it: `jobs cancel <id>.<k>` cancels one
            score = next(iter(a["scores"].values()), None)
            _out(f"  {a['id']:<12} {a['state']:<10} {'':<7} {'arm ' + str(a['ratio']) + ' seed ' + str(a['seed']):<36} "
                 f"{_progress_text({**a, 'state': None}):<28} {'' if score is None else f'accuracy {score:.2f}'}")
    if sweep and any(not j.state.finished for j in jobs):
        from toolkit.queue.worker import slots_here
        from toolkit.study import estimate

        left = estimate.time_left(jobs, estimate.measured_here(store), slots=slots_here(),
                                  ahead=estimate.queued_ahead(store, jobs))
        search = estimate.queues_rungs(store.sweep_spec(sweep))
        _out(f"time left: {left.left_text(search=search)}" if left else
             "time left: not known yet (no measured rate of this model here; each job's ETA shows from its first steps)")
    return 0


def cmd_jobs_show(args) -> int:
    from toolkit.queue.store import JobStore
    from toolkit.study.progress import job_progress

    job = JobStore().get(args.id)
    doc = {**job.to_dict(), "progress": job_progress(job, log_lines=args.tail)}
    if args.json:
        _out(json.dumps(doc, indent=2))
        return 0
    _out(f"job {job.id} · {job.name} · {job.state.value}" + (f" ({job.reason})" if job.reason else ""))
    for key in ("sweep_id", "executor", "engine_id", "gpu_ids", "output_dir", "log_path", "attempts", "max_attempts",
                "retries", "created", "started", "finished", "message"):
        if doc.get(key) not in (None, ""):
            _out(f"  {key:<13} {doc[key]}")
    if job.state.value == "running" and job.executor != "local":
        _out(f"  {'worker':<13} pid {job.worker_pid} on {job.worker_host}; {job.executor} job {job.engine_id}")
        _out(f"  {'progress':<13} {doc['progress']['phase']} {_progress_text(doc['progress'])}")
    elif job.state.value == "running":
        _out(f"  {'worker':<13} pid {job.worker_pid} on {job.worker_host}; step pid {job.pid}")
        _out(f"  {'progress':<13} {doc['progress']['phase']} {_progress_text(doc['progress'])}")
    for i, step in enumerate(job.steps):
        marker = ">" if i == job.step_index and job.state.value == "running" else " "
        _out(f" {marker}step {i + 1}: {' '.join('python' if a == '{python}' else a for a in step)}")
    if doc["progress"]["log_tail"]:
        _out("  log tail:")
        for line in doc["progress"]["log_tail"]:
            _out(f"    {line}")
    return 0


def _arm_id(store, text: str) -> bool:
    """True when `text` names one arm of a pack job (`<job id>.<k>`) rather than a job."""
    import re

    if not re.fullmatch(r".+\.\d+", text.strip()):
        return False
    try:
        store.get(text)
    except InputError:
        return True
    return False


def cmd_jobs_cancel(args) -> int:
    from toolkit.queue.store import JobStore

    store = JobStore()
    if not args.sweep and _arm_id(store, args.id):
        from toolkit.study.packrun import cancel_arm

        arm = cancel_arm(store, args.id)
        _out(f"arm {arm['id']} ({arm['ratio']}, seed {arm['seed']}): cancel requested; it leaves its pack at the "
             f"next step, checkpointed, and the other arms go on"
             + ("; no arm of the pack is left to train, so the job is cancelled" if arm["job_cancelled"] else ""))
        return 0
    if args.sweep:
        from toolkit.queue.actions import cancel_sweep

        done = cancel_sweep(store, args.id)
        _out(f"sweep {args.id}: cancel requested for {len(done)} job(s)" + (f": {', '.join(done)}" if done else ""))
        return 0
    job = store.request_cancel(args.id)
    if job.state.value == "cancelled":
        _out(f"job {job.id}: cancelled")
    elif job.executor != "local":
        _out(f"job {job.id}: cancel requested; its worker cancels {job.executor} job {job.engine_id} (scancel)")
    else:
        _out(f"job {job.id}: cancel requested; its worker stops it (SIGTERM, then SIGKILL after a grace period)")
    return 0


def cmd_jobs_retry(args) -> int:
    from toolkit.queue.store import JobStore

    if args.sweep:
        from toolkit.queue.actions import retry_sweep

        done = retry_sweep(JobStore(), args.id)
        _out(f"sweep {args.id}: {len(done)} job(s) queued again" + (f": {', '.join(done)}" if done else "")
             + " (each resumes from its last checkpoint)")
    elif _arm_id(store := JobStore(), args.id):
        from toolkit.study.packrun import retry_arm

        arm = retry_arm(store, args.id)
        _out(f"arm {arm['id']} ({arm['ratio']}, seed {arm['seed']}): cancel withdrawn; its pack job is "
             f"{arm['state']} and resumes the arm from its checkpoint")
    else:
        job = JobStore().retry(args.id)
        _out(f"job {job.id}: queued again (resumes from its last checkpoint, step {job.step_index + 1} of "
             f"{len(job.steps)})")
    if not args.no_worker:
        from toolkit.queue.lifecycle import ensure_worker

        ensure_worker()
    return 0


def cmd_jobs_logs(args) -> int:
    from toolkit.queue.executor import tail_lines
    from toolkit.queue.store import JobStore

    store = JobStore()
    job = store.get(args.id)
    for line in tail_lines(job.log_path, args.tail):
        _out(line)
    if not args.follow:
        return 0
    try:
        with open(job.log_path, "rb") as fh:
            fh.seek(0, 2)
            while True:
                chunk = fh.read()
                if chunk:
                    sys.stdout.write(chunk.decode("utf-8", errors="replace"))
                    sys.stdout.flush()
                elif store.get(job.id).state.finished:
                    return 0
                else:
                    time.sleep(0.5)
    except FileNotFoundError:
        raise InputError(f"job {job.id}: no log yet at {job.log_path} (it has not started)") from None


# ----------------------------------------------------------------------------------------- worker

def cmd_worker(args) -> int:
    import logging

    from toolkit.queue.worker import WorkerConfig, run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    config = WorkerConfig(slots=args.slots, gpus=args.gpus, threads_per_job=args.threads, poll_s=args.poll,
                          grace_s=args.grace, once=args.once, idle_exit_s=args.idle_exit, engine_jobs=args.slurm_jobs)
    return run_worker(config, lock_fd=args.lock_fd, exclusive=not args.extra)


# ----------------------------------------------------------------------------------------- parsers

def register(sub) -> None:
    p = sub.add_parser("jobs", help="list, show, cancel, retry background jobs or read their logs")
    jobs = p.add_subparsers(dest="jobs_command", required=True, parser_class=type(p))
    q = jobs.add_parser("list", help="every job with its state and progress")
    q.add_argument("--sweep", help="only this sweep (id or prefix)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_jobs_list)
    q = jobs.add_parser("show", help="one job in detail")
    q.add_argument("id")
    q.add_argument("--json", action="store_true")
    q.add_argument("--tail", type=number(int), default=20, help="log lines to show (default 20)")
    q.set_defaults(func=cmd_jobs_show)
    q = jobs.add_parser("cancel", help="cancel a queued or running job (or every one of a sweep, or one arm of a "
                        "pack job)")
    q.add_argument("id", help="job id; JOB.K: arm K of a pack job (it leaves its pack, the others go on); sweep id "
                   "(prefix) with --sweep")
    q.add_argument("--sweep", action="store_true", help="cancel every queued or running job of sweep ID")
    q.set_defaults(func=cmd_jobs_cancel)
    q = jobs.add_parser("retry", help="queue a failed or cancelled job again with a fresh attempt count "
                        "(it resumes at its failed step, from its last checkpoint)")
    q.add_argument("id", help="job id; JOB.K: a cancelled arm of a pack job; sweep id (prefix) with --sweep")
    q.add_argument("--sweep", action="store_true", help="retry every failed or cancelled job of sweep ID")
    q.add_argument("--no-worker", action="store_true", help="do not start a background worker")
    q.set_defaults(func=cmd_jobs_retry)
    q = jobs.add_parser("logs", help="a job's log (stdout and stderr of its steps)")
    q.add_argument("id")
    q.add_argument("--tail", type=number(int), default=50, help="lines (default 50)")
    q.add_argument("--follow", action="store_true", help="keep printing until the job ends")
    q.set_defaults(func=cmd_jobs_logs)

    p = sub.add_parser("worker", help="run the background worker (the app starts one when needed)")
    p.add_argument("--slots", type=number(int), help="concurrent jobs (default: one per GPU, or by CPU cores)")
    p.add_argument("--gpus", default="auto", help="auto (all detected), none, or ids such as 0,1")
    p.add_argument("--threads", type=number(int), help="CPU threads per job (default from cores and slots)")
    p.add_argument("--once", action="store_true", help="exit when the queue is empty")
    p.add_argument("--poll", type=number(float), default=1.0, help="seconds between queue checks (default 1)")
    p.add_argument("--grace", type=number(float), default=10.0,
                   help="seconds a cancelled job gets to checkpoint before SIGKILL (default 10)")
    p.add_argument("--idle-exit", type=number(float), default=0.0, help="exit after S idle seconds (0 = never)")
    p.add_argument("--extra", action="store_true", help="run beside the main worker (skip the per-folder lock)")
    p.add_argument("--slurm-jobs", type=number(int), default=256,
                   help="Slurm jobs kept submitted at once (default 256; Slurm queues them)")
    p.add_argument("--lock-fd", type=number(int), help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_worker)
