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
the names' prefix); `--audit`, `--overwrite` and `--expect-lora-sha256` are refused with the reason. The jobs it
queues are followed with toolkit.cli.jobs (`jobs list --sweep ID`).
"""

from __future__ import annotations

import json
import sys

from toolkit.cli.flags import number
from toolkit.errors import InputError


def _out(text: str = "") -> None:
    print(text)  # noqa: T201 - a CLI prints


REFUSED = {
    "audit": "a sweep solves each ratio's allocation; train explicit ranks with `train --audit`",
    "overwrite": "a sweep's jobs resume from their checkpoints; delete the old adapters or change the sweep",
    "expect_lora_sha256": "the sweep sets each job's to its planned allocation",
}
"""`train` options a sweep offers but refuses (one line saying why)"""

SLURM_FLAGS = ("partition", "nodes", "gpus_per_node", "cpus_per_gpu", "mem", "time", "sbatch_extra")


def slurm_from_args(args) -> dict | None:
    """The Slurm resource flags as a SlurmResources dict (None for the local executor; InputError if set there)."""
    given = [f for f in SLURM_FLAGS if getattr(args, f, None) is not None]
    if args.executor != "slurm":  # not given: the local executor
        if given:
            raise InputError(f"{given[0].replace('_', ' ')}: only with --executor slurm")
        return None
    if args.gpus_per_job is not None and args.gpus_per_node is not None:
        raise InputError("gpus per node: give --gpus-per-node (Slurm) or --gpus-per-job, not both")
    return {"partition": args.partition, "nodes": args.nodes if args.nodes is not None else 1,
            "gpus_per_node": args.gpus_per_node, "cpus_per_gpu": args.cpus_per_gpu, "mem": args.mem,
            "time": args.time, "extra": args.sbatch_extra or ""}


def spec_from_args(args):
    """The SweepSpec of a parsed `sweep` command line: its own flags plus every TrainSettings flag given."""
    from toolkit.cli.flags import values_from_args
    from toolkit.study.sweep import SWEPT, SweepSpec
    from toolkit.training.settings import TrainSettings

    if not args.ratios and not args.design:
        raise InputError("ratios: give --ratios V:P:L[,...] or a --design such as simplex-lattice:3")
    kinds = [k for k in ("rank", "params", "percent") if getattr(args, f"budget_{k}") is not None]
    if not kinds:
        raise InputError("budget: give one of --budget-rank R, --budget-params N, --budget-percent P")
    if args.seeds is not None and args.seed_list is not None:
        raise InputError("seeds: give --seeds N or --seed-list, not both")
    for name in REFUSED:
        if getattr(args, name) is not None:
            raise InputError(f"{name.replace('_', '-')}: {REFUSED[name]}")
    train = values_from_args(TrainSettings, args, exclude=SWEPT)
    return SweepSpec.build(
        model=train.pop("model", None), dataset=train.pop("dataset", None), ratios=args.ratios, budget_kind=kinds[0],
        budgets=getattr(args, f"budget_{kinds[0]}"), seeds=args.seeds, seed_list=args.seed_list,
        train=train, evaluate=not args.no_eval, eval_split=args.eval_split,
        eval_limit=args.eval_limit, output=args.output, name=args.name, gpus_per_job=args.gpus_per_job,
        max_attempts=args.max_attempts, executor=args.executor, slurm=slurm_from_args(args),
        reference=not args.no_reference, design=args.design, search=_search(args, train), retrieval=args.retrieval,
        retrieval_dataset=args.retrieval_dataset, pack=args.pack, pack_size=args.pack_size)


def _search(args, train: dict):
    """The --search/--rungs/--eta flags as toolkit.study.search.Search (a dict), or None."""
    if not args.search:
        if args.rungs or args.eta or args.report_split or args.no_confirm or args.controls:
            raise InputError("search: --rungs, --eta, --report-split, --no-confirm and --controls belong to "
                             "--search halving")
        return None
    from toolkit.study.search import Search

    return Search.parse(args.search, max_steps=train.get("max_steps"), rungs=args.rungs,
                        eta=_float_flag(args.eta, "eta"), confirm=not args.no_confirm,
                        report_split=args.report_split, controls=args.controls).to_dict()


def _float_flag(value, name: str):
    if value in (None, ""):
        return None
    try:
        return float(value)
    except ValueError:
        raise InputError(f"{name}: '{value}' is not a number") from None


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


def register(sub) -> None:
    from toolkit.cli.flags import add_flags
    from toolkit.queue.store import DEFAULT_MAX_ATTEMPTS
    from toolkit.study.sweep import DEFAULT_EXECUTOR, EVAL_SPLIT, SWEPT
    from toolkit.training.settings import TrainSettings

    p = sub.add_parser("sweep", help="queue a sweep of training jobs: ratios x seeds (x budgets)",
                       description="Queue one training job per ratio, seed and budget (train, then evaluate). "
                                   "Every `train` option is accepted: shared ones go to every job, the per-job "
                                   "ones (ratio, budget, seed, output, name) become the sweep's axes.")
    add_flags(p, TrainSettings, exclude=SWEPT, title="{} (every job)")
    g = p.add_argument_group("the sweep's axes (what `train` takes once per job)")
    g.add_argument("--ratios", "--ratio", metavar="V:P:L[,V:P:L...]",
                   help="comma-separated V:P:L ratios, e.g. 1:1:1,1:4:1,2:4:1 (or --design, or both)")
    g.add_argument("--design", metavar="DESIGN", help="a study design over the simplex: simplex-lattice:M or "
                   "simplex-centroid, optionally ?floor=F (every weight >= F); always includes 1:1:1")
    g.add_argument("--search", choices=["halving"], help="successive halving: train every arm to the first rung, "
                   "keep the better 1/eta (noise-aware), continue the survivors from their checkpoints")
    g.add_argument("--rungs", metavar="S1,S2,...", help="steps of each rung, the last = --max-steps "
                   "(default: max-steps / eta^2, / eta, max-steps)")
    g.add_argument("--eta", metavar="ETA", help="keep about 1/ETA of the arms per rung (default 2)")
    g.add_argument("--report-split", metavar="SPLIT", help="after the search, the confirmation (recommended ratio "
                   "and 1:1:1, fresh seeds) is evaluated on this split (default test)")
    g.add_argument("--no-confirm", action="store_true", help="do not queue the confirmation after the search")
    g.add_argument("--controls", action="store_true", help="with the confirmation, also queue the learning-rate "
                   "control (1:1:1 with the projector's lr scaled as the winner scales its rank) and the alpha-rule "
                   "axis (rsLoRA, fixed alpha)")
    g.add_argument("--seeds", help="number of seeds: 0..N-1 (default 1)")
    g.add_argument("--seed-list", "--seed", help="explicit seeds, e.g. 0,1,2")
    budget = g.add_mutually_exclusive_group()
    budget.add_argument("--budget-rank", metavar="R[,R...]", help="uniform rank equivalent (several: 8,16)")
    budget.add_argument("--budget-params", metavar="N[,N...]", help="trainable parameters")
    budget.add_argument("--budget-percent", metavar="P[,P...]", help="percent of the base model")
    g.add_argument("--output", metavar="DIR", help="folder of the sweep's adapters (default: the adapter store)")
    g.add_argument("--name", help="job and adapter names start with NAME instead of the model's name")
    g.add_argument("--resume", action="store_true", help="always on: every job resumes from its last checkpoint")
    for name, why in REFUSED.items():
        kind = {"action": "store_true", "default": None} if name == "overwrite" else {"metavar": name.upper()}
        g.add_argument("--" + name.replace("_", "-"), help=f"not in a sweep: {why}", **kind)
    g = p.add_argument_group("evaluation (a step after training)")
    g.add_argument("--eval-split", default=EVAL_SPLIT, help=f"split to evaluate on (default {EVAL_SPLIT})")
    g.add_argument("--eval-limit", type=number(int), metavar="N", help="evaluate on at most N questions")
    g.add_argument("--no-eval", action="store_true", help="train only")
    g.add_argument("--retrieval", metavar="N", help="also measure image-text retrieval (Recall@1/5/10 both ways) "
                   "on N image-caption pairs, for every adapter and the base model")
    g.add_argument("--retrieval-dataset", metavar="D", help="image-caption data of --retrieval (default: "
                   "synthetic:shapes, captions written from the scenes)")
    g.add_argument("--no-reference", action="store_true",
                   help="do not queue the base model's evaluation on the same questions (the comparison's reference row)")
    g = p.add_argument_group("queueing")
    g.add_argument("--pack", action="store_true", help="one job per pack of arms of one budget instead of one per "
                   "arm: the pack trains its arms in one process on one copy of the base (fused where it can) and "
                   "evaluates each there (`python -m toolkit pack`)")
    g.add_argument("--pack-size", type=number(int), metavar="N", help="at most N arms per pack (default: every arm "
                   "of a budget, up to 64); a pack whose forward runs out of GPU memory splits it in two and goes on, "
                   "but every arm's LoRA and optimizer state stays on the device: on a GPU, size packs to fit")
    g.add_argument("--gpus-per-job", type=number(int), help="default: 1 when the machine has GPUs, else 0 (CPU); "
                   "more than 1 trains with DDP (torchrun), the global batch kept")
    g.add_argument("--max-attempts", type=number(int), help="runs allowed when a worker is lost (default "
                   f"{DEFAULT_MAX_ATTEMPTS})")
    g.add_argument("--dry-run", action="store_true", help="show the plan, queue nothing")
    g.add_argument("--measure", action="store_true", help="before queueing (or with --dry-run), train a few steps "
                   "of the first job and answer a few questions here, so the time estimate has a measured speed")
    g.add_argument("--no-worker", action="store_true", help="queue only; do not start a background worker")
    g.add_argument("--wait", action="store_true", help="after queueing, wait until every job has finished (a "
                   "progress bar on a terminal); exit 1 unless all succeeded")
    g.add_argument("--json", action="store_true", help="print the plan (and queue result) as JSON")
    g = p.add_argument_group("executor (where the jobs run)")
    g.add_argument("--executor", choices=["local", "slurm"], help="local: the worker's processes; slurm: sbatch to "
                   f"a Slurm cluster (default {DEFAULT_EXECUTOR})")
    g.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
    g.add_argument("--nodes", type=number(int), help="Slurm nodes per job (default 1; more: DDP across nodes)")
    g.add_argument("--gpus-per-node", type=number(int),
                   help="GPUs per node (default: 1 when the partition has GPUs, else 0); >1 trains with DDP")
    g.add_argument("--cpus-per-gpu", type=number(int), help="CPUs per GPU (per node for CPU jobs)")
    g.add_argument("--mem", help="memory per node, e.g. 64G")
    g.add_argument("--time", help="time limit: minutes, H:MM:SS or D-HH:MM:SS (default: the partition's)")
    g.add_argument("--sbatch-extra", metavar="OPTIONS", help='more sbatch options, e.g. --sbatch-extra="--qos=high --account=lab" (with =)')
    p.set_defaults(func=cmd_sweep)
