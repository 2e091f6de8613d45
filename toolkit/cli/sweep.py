"""The `sweep` command: plan a sweep of ratios x seeds (x budgets) and queue it in the job system.

    python -m toolkit sweep --model demo --dataset synthetic:shapes --ratios 1:1:1,1:4:1,2:4:1 --seeds 3 \\
        --budget-rank 8 --max-steps 200 --dry-run          # the plan: each job's ranks and params, the time estimate
    python -m toolkit sweep ... --dry-run --measure         # the estimate from a few steps measured here first
    python -m toolkit sweep ... --json                      # queue it and start a worker (unless --no-worker)
    python -m toolkit sweep ... --executor slurm --partition gpu --gpus-per-node 2 --nodes 1 --cpus-per-gpu 8 \\
        --mem 64G --time 12:00:00 --sbatch-extra="--qos=high"   # Slurm jobs (the worker submits them)

`sweep` takes every `train` flag (derived from TrainSettings by toolkit/cli/flags.py, so they cannot drift):
shared ones go to every job (`--patterns`, `--columns`, `--image-dir`, `--lr`, ...), the per-job ones become the
sweep's axes (`--ratio(s)`, `--seed(-list)`, `--budget-*` lists, `--output` as the adapters' folder, `--name` as
the names' prefix); `--audit`, `--overwrite` and `--expect-lora-sha256` are refused with the reason. The sweep's
own options (its axes, evaluation, queueing and executor) are generated the same way from the fields of
`SweepSettings` (toolkit/study/settings.py), and `SweepSpec.from_options` reads them; only what the command does
with the sweep (--dry-run, --measure, --no-worker, --wait, --json) is written here. The jobs it queues are followed
with toolkit.cli.jobs (`jobs list --sweep ID`).
"""

from __future__ import annotations

import json
import sys

from toolkit.errors import InputError


def _out(text: str = "") -> None:
    print(text)  # noqa: T201 - a CLI prints


REFUSED = {
    "audit": "a sweep solves each ratio's allocation; train explicit ranks with `train --audit`",
    "overwrite": "a sweep's jobs resume from their checkpoints; delete the old adapters or change the sweep",
    "expect_lora_sha256": "the sweep sets each job's to its planned allocation",
}
"""`train` options a sweep offers but refuses (one line saying why)"""

RESUME = "always on: every job resumes from its last checkpoint"
"""the help of `train`'s --resume in a sweep"""


def spec_from_args(args):
    """The SweepSpec of a parsed `sweep` command line: its own options (SweepSettings) plus every TrainSettings
    flag given."""
    from toolkit.cli.flags import values_from_args
    from toolkit.study.settings import SweepSettings
    from toolkit.study.sweep import SWEPT, SweepSpec
    from toolkit.training.settings import TrainSettings

    options = values_from_args(SweepSettings, args, empty_ok=True)  # '' reads as not given, as it always did
    for name in REFUSED:
        if getattr(args, name) is not None:
            raise InputError(f"{name.replace('_', '-')}: {REFUSED[name]}")
    return SweepSpec.from_options(options, train=values_from_args(TrainSettings, args, exclude=SWEPT))


def cmd_sweep(args) -> int:
    from toolkit.calculator.checks import budget_flag
    from toolkit.study.sweep import plan_sweep, submit_sweep

    plan = plan_sweep(spec_from_args(args))
    if args.measure:
        from toolkit.queue.store import JobStore
        from toolkit.study import probe

        store = JobStore()
        if note := probe.busy_note(store):
            print(f"warning: {note}", file=sys.stderr, flush=True)
        measured = probe.measure(plan, log=lambda line: print(line, file=sys.stderr, flush=True))
        probe.save(measured, store.folder)
        print(f"probe: {measured.text()}", file=sys.stderr, flush=True)
    estimate = _estimate(plan)
    result = None
    worker = None
    if not args.dry_run:
        result = submit_sweep(plan)
        if not args.no_worker:
            from toolkit.queue.lifecycle import ensure_worker

            worker = ensure_worker()
    if args.json:
        doc = plan.to_dict()
        doc["dry_run"] = bool(args.dry_run)
        if result is not None:
            doc["created"] = result.created
            doc["states"] = {j.id: j.state.value for j in result.jobs}
        doc["worker"] = worker
        doc["estimate"] = estimate and {"low_s": round(estimate.low_s, 1), "high_s": round(estimate.high_s, 1),
                                        "slots": estimate.slots, "basis": estimate.basis}
        _out(json.dumps(doc, indent=2))
        return _wait(plan.sweep_id, quiet=True) if args.wait and not args.dry_run else 0
    where = "" if plan.spec.executor == "local" else f" · Slurm: {' '.join(plan.spec.slurm.sbatch_args())}"
    _out(f"sweep {plan.sweep_id} · {plan.spec.model} on {plan.spec.dataset} · {len(plan.jobs)} job(s){where}")
    if plan.spec.search:
        rungs = ", ".join(map(str, plan.spec.search["rungs"]))
        _out(f"successive halving at steps {rungs} (eta {plan.spec.search['eta']:g}): "
             + ("inside the pack: every rung is an evaluation of the running pack, the dropped ratios leave it"
                if plan.spec.pack else "each rung queues the survivors' next jobs"))
    _out(f"{'job':<12} {'name':<36} {'ranks v:p:l':>12} {'params':>14} {'budget err':>10}")
    for j in plan.jobs:
        if j.arms:  # a pack: one job, its arms under it
            _out(f"{j.id:<12} {j.name:<36} {len(j.arms):>5} arm(s) {j.params:>14,}")
        for a in j.arms or (j,):
            err = "-" if a.budget_error is None else f"{a.budget_error:+.2f}%"
            flag = budget_flag(a.budget_error)
            label = (f"  {a.ratio} s{a.seed}", "") if j.arms else (j.id, j.name)
            _out(f"{label[0]:<12} {label[1]:<36} {':'.join(map(str, a.ranks)):>12} {a.params:>14,} {err:>10}"
                 + (f"  !! {flag}" if flag else ""))
    for warning in plan.warnings:
        _out(f"warning: {warning}")
    _out(f"estimated time: {estimate.text()}" if estimate else
         "estimated time: none yet (no earlier run of this model on this device here); --measure trains a few "
         "steps of the first job here to get one" if plan.spec.executor == "local" else
         "estimated time: none yet (no earlier run of this model here); `jobs list` shows each job's ETA")
    if args.dry_run:
        from toolkit.study.preflight import preflight

        for problem in preflight(plan.spec):
            _out(f"pre-flight: {problem} (queueing would be refused)")
        _out("dry run: nothing queued")
    elif result.created:
        _out(f"queued {len(result.jobs)} job(s); follow with `python -m toolkit jobs list --sweep {plan.short_id}`")
    else:
        _out(f"this sweep was already queued ({plan.short_id}): nothing new; see `jobs list --sweep {plan.short_id}`")
    if worker is not None:
        pid = f" (pid {worker['pid']})" if worker["pid"] else ""
        _out(f"worker: {'started' if worker['started'] else 'already running'}{pid}")
    return _wait(plan.sweep_id) if args.wait and not args.dry_run else 0


def _estimate(plan):
    """The plan's time estimate from what was measured here (toolkit.study.estimate), or None."""
    from toolkit.queue.store import JobStore
    from toolkit.queue.worker import slots_here
    from toolkit.study import estimate

    return estimate.estimate_sweep(estimate.plan_jobs(plan), estimate.measured_here(JobStore()), slots=slots_here())


def _wait(sweep: str, *, quiet: bool = False) -> int:
    """Wait for the sweep's jobs (the bar on stderr); `quiet`: nothing more on stdout (--json)."""
    from toolkit.outcomes import ExitCode
    from toolkit.queue.actions import wait_sweep
    from toolkit.queue.store import JobStore

    counts = wait_sweep(JobStore(), sweep)
    if not quiet:
        _out(f"sweep {sweep[:8]} finished: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    return ExitCode.SUCCESS if set(counts) == {"succeeded"} else ExitCode.FAILURE


COMMAND_FLAGS = {
    "--dry-run": "show the plan, queue nothing",
    "--measure": "before queueing (or with --dry-run), train a few steps of the first job and answer a few "
                 "questions here, so the time estimate has a measured speed",
    "--no-worker": "queue only; do not start a background worker",
    "--wait": "after queueing, wait until every job has finished (a progress bar on a terminal); exit 1 unless "
              "all succeeded",
    "--json": "print the plan (and queue result) as JSON",
}
"""what the command does with the sweep (not part of it: no settings field), each a switch"""


def register(sub) -> None:
    from toolkit.cli.flags import add_flag, add_flags
    from toolkit.fields import settings_field
    from toolkit.study.settings import SweepAxes, SweepQueueing, SweepSettings
    from toolkit.study.sweep import SWEPT
    from toolkit.training.settings import TrainSettings

    p = sub.add_parser("sweep", help="queue a sweep of training jobs: ratios x seeds (x budgets)",
                       description="Queue one training job per ratio, seed and budget (train, then evaluate). "
                                   "Every `train` option is accepted: shared ones go to every job, the per-job "
                                   "ones (ratio, budget, seed, output, name) become the sweep's axes.")
    add_flags(p, TrainSettings, exclude=SWEPT, title="{} (every job)")
    groups = add_flags(p, SweepSettings)  # the sweep's own options, each a field of toolkit/study/settings.py
    axes = groups[SweepAxes.section]
    add_flag(axes, settings_field(TrainSettings, "resume"), help=RESUME)
    for name, why in REFUSED.items():  # `train` options a sweep offers only to say why it refuses them
        add_flag(axes, settings_field(TrainSettings, name), help=f"not in a sweep: {why}")
    queueing = groups[SweepQueueing.section]
    for flag, text in COMMAND_FLAGS.items():
        queueing.add_argument(flag, action="store_true", help=text)
    p.set_defaults(func=cmd_sweep)
