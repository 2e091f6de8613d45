"""Sweeps: ratios x seeds (x budgets) of one model, dataset and training setup, queued as one group of jobs.

    spec = SweepSpec.build(model="demo", dataset="synthetic:shapes", ratios="1:1:1,1:4:1", seeds=3,
                           budget_kind="rank", budgets="8", train=TrainSettings(max_steps=200))
    plan = plan_sweep(spec)          # validates everything, allocates every job; writes nothing
    plan.rows()                      # what each job costs: ranks v:p:l, trainable params, budget error
    result = submit_sweep(plan)      # one transaction; the same spec twice creates the sweep once

The sweep id is a hash of the normalised spec (ratios, budgets and seeds sorted, numbers canonical), so a double
click or a re-run finds the existing sweep instead of queueing it again (re-run a finished job with
`jobs retry`). Job `k` of sweep `<id>` is `<id[:8]>-<k>`, named `<model>-r<v>-<p>-<l>-<budget>-s<seed>`
(budget `b8` = uniform rank 8, `p20000000` = params, `pct0.3` = percent), and trains into the flat adapter
store as `adapters_dir()/<job name>-<id[:8]>`. Each job is `train ... --resume` (so retries and crash
recovery continue from the last checkpoint), then optionally `evaluate` on `eval_split`.

Where jobs run: `executor="local"` (the worker's subprocesses, the default) or `"slurm"` with per-job
`SlurmResources` (toolkit/slurm.py; checked against the cluster before anything is queued). Neither changes
what a sweep computes, so neither is part of its id. A job with more than one GPU (local `gpus_per_job`, or
Slurm GPUs per node x nodes) trains through `python -m toolkit.training.distributed` (DDP, the global batch kept).

Progress for the UI and CLI: `job_progress(job)` reads the last line of `<output>/metrics.jsonl`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from toolkit.calculator.spec import MODES, Budget, Ratio, parse_int
from toolkit.errors import InputError
from toolkit.jobs.executor import PYTHON, tail_lines
from toolkit.jobs.store import DEFAULT_MAX_ATTEMPTS, EXECUTORS, Job, JobState, JobStore, NewJob, check_writable
from toolkit.paths import adapters_dir, jobs_dir

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MAX_JOBS = 500


def _positive_int(value, name: str, *, zero: bool = False) -> int | None:
    number = parse_int(value, name)
    if number is None:
        return None
    if number < (0 if zero else 1):
        raise InputError(f"{name}: must be {'>= 0' if zero else '>= 1'}, got {number}")
    return number


def _positive_float(value, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        raise InputError(f"{name}: '{value}' is not a number") from None
    if not math.isfinite(number) or number <= 0:
        raise InputError(f"{name}: must be a number > 0, got {value}")
    return number


def suggested_settings(model: str) -> dict:
    """Launch-form defaults. For the demo model: each run trains in about a minute on one CPU core and the
    allocation shows in the results (bench/RESULTS.md, demo study); otherwise LoRA's usual settings."""
    if model == "demo":
        return {"seeds": 2, "max_steps": 300, "batch_size": 16, "lr": "5e-3", "eval_limit": 400}
    return {"seeds": 3, "max_steps": 200, "batch_size": 8, "lr": "2e-4", "eval_limit": 500}


@dataclass(frozen=True)
class TrainSettings:
    """Training flags passed through to every job's `train` step (None = train's own default)."""

    split: str | None = None
    limit: int | None = None
    max_steps: int | None = None
    epochs: float | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    lr: float | None = None
    lr_vision: float | None = None
    lr_projector: float | None = None
    lr_language: float | None = None
    precision: str | None = None
    """auto | fp32 | bf16 | fp16"""
    gradient_checkpointing: bool = False
    quantize: str | None = None
    """None or '4bit' (QLoRA)"""
    checkpoint_every: int | None = None

    def __post_init__(self):
        set_ = object.__setattr__
        for name in ("limit", "max_steps", "batch_size", "grad_accum", "checkpoint_every"):
            set_(self, name, _positive_int(getattr(self, name), name.replace("_", " ")))
        for name in ("epochs", "lr", "lr_vision", "lr_projector", "lr_language"):
            set_(self, name, _positive_float(getattr(self, name), name.replace("_", " ")))
        if self.max_steps is not None and self.epochs is not None:
            raise InputError("max steps: give either max steps or epochs, not both")
        if self.precision not in (None, "", *PRECISIONS):
            raise InputError(f"precision: must be one of {', '.join(PRECISIONS)}, got '{self.precision}'")
        if self.quantize not in (None, "", "4bit"):
            raise InputError(f"quantize: only '4bit' is supported, got '{self.quantize}'")
        for name in ("split", "precision", "quantize"):
            set_(self, name, (getattr(self, name) or "").strip() or None)

    def argv(self) -> list[str]:
        out = []
        for name, value in asdict(self).items():
            flag = "--" + name.replace("_", "-")
            if value is True:
                out.append(flag)
            elif value not in (None, False):
                out += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
        return out


def parse_ratios(ratios) -> tuple[str, ...]:
    """'1:1:1,1:4:1' or a list -> canonical, de-duplicated ratio strings (order kept)."""
    items = ratios.split(",") if isinstance(ratios, str) else list(ratios or [])
    # a comma also separates V,P,L in Ratio.parse: a sweep list therefore takes ':' or '/' inside a ratio
    out = []
    for item in (str(i).strip() for i in items):
        if item:
            text = str(Ratio.parse(item))
            if text not in out:
                out.append(text)
    if not out:
        raise InputError("ratios: give at least one ratio V:P:L, e.g. --ratios 1:1:1,1:4:1")
    return tuple(out)


def parse_seeds(count=None, seed_list=None) -> tuple[int, ...]:
    """`count` seeds 0..count-1, or an explicit list '0,1,2' (whole numbers >= 0, no repeats)."""
    if seed_list not in (None, "", []):
        items = seed_list.split(",") if isinstance(seed_list, str) else list(seed_list)
        seeds = [_positive_int(s, "seeds", zero=True) for s in items if str(s).strip()]
        if not seeds:
            raise InputError("seeds: the seed list is empty (e.g. --seed-list 0,1,2)")
        if len(set(seeds)) != len(seeds):
            raise InputError(f"seeds: '{seed_list}' repeats a seed")
        return tuple(seeds)
    n = 1 if count in (None, "") else _positive_int(count, "seeds")
    if n > 100:
        raise InputError(f"seeds: at most 100 seeds per sweep, got {n}")
    return tuple(range(n))


def parse_budgets(kind: str, values) -> tuple[Budget, ...]:
    """Several budgets of one kind: '8' or '8,16' (rank), params, or percent."""
    items = values.split(",") if isinstance(values, str) else list(values if values is not None else [])
    budgets = [Budget.parse(kind, v) for v in items if str(v).strip()]
    if not budgets:
        raise InputError("budget: give one of --budget-rank R, --budget-params N, --budget-percent P")
    return tuple(dict.fromkeys(budgets))


def _budget_tag(b: Budget) -> str:
    return {"rank": f"b{b.value:g}", "params": f"p{int(b.value)}", "percent": f"pct{b.value:g}"}[b.kind]


def _slug(text: str) -> str:
    name = Path(text.rstrip("/")).name if "/" in text else text
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-.") or "model"


@dataclass(frozen=True)
class SweepSpec:
    """Everything that defines a sweep; its normalised form hashes to the sweep id."""

    model: str
    dataset: str
    ratios: tuple[str, ...]
    budgets: tuple[Budget, ...]
    seeds: tuple[int, ...] = (0,)
    mode: str = "rank"
    targets: str = ""
    alpha_rule: str = "scaled"
    alpha: float = 2.0
    train: TrainSettings = field(default_factory=TrainSettings)
    eval_split: str | None = "validation"
    """split the evaluate step scores (None = no evaluate step)"""
    eval_limit: int | None = None
    gpus_per_job: int = 0
    """GPUs of each job (Slurm: GPUs per node x nodes)"""
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    executor: str = "local"
    """local | slurm"""
    slurm: object = None
    """SlurmResources of each job when executor is slurm"""

    def __post_init__(self):
        if not str(self.model).strip():
            raise InputError("model: choose a preset, a local folder with config.json, or a Hub id")
        if not str(self.dataset).strip():
            raise InputError("dataset: give a dataset, e.g. synthetic:shapes")
        if self.mode not in MODES:
            raise InputError(f"mode: must be one of {', '.join(MODES)}, got '{self.mode}'")
        if not self.ratios:
            raise InputError("ratios: give at least one ratio V:P:L, e.g. 1:1:1,1:4:1")
        # canonical order, so the same sweep typed in another order gets the same id and the same job ids
        object.__setattr__(self, "ratios", tuple(sorted(self.ratios, key=lambda r: Ratio.parse(r).as_tuple())))
        object.__setattr__(self, "budgets", tuple(sorted(self.budgets, key=lambda b: (b.kind, b.value))))
        object.__setattr__(self, "seeds", tuple(sorted(self.seeds)))
        if not self.budgets:
            raise InputError("budget: give one of --budget-rank R, --budget-params N, --budget-percent P")
        if not self.seeds:
            raise InputError("seeds: give at least one seed")
        if not isinstance(self.gpus_per_job, int) or self.gpus_per_job < 0:
            raise InputError(f"gpus per job: must be a whole number >= 0, got {self.gpus_per_job!r}")
        if not isinstance(self.max_attempts, int) or not 1 <= self.max_attempts <= 100:
            raise InputError(f"max attempts: must be a whole number in 1..100, got {self.max_attempts!r}")
        if self.executor not in EXECUTORS:
            raise InputError(f"executor: must be one of {', '.join(EXECUTORS)}, got '{self.executor}'")
        if self.executor == "slurm":
            from toolkit.jobs.slurm.executor import SlurmResources

            res = self.slurm if isinstance(self.slurm, SlurmResources) else SlurmResources.from_dict(self.slurm)
            object.__setattr__(self, "slurm", res)
            if res.gpus_per_node is not None:
                object.__setattr__(self, "gpus_per_job", res.gpus)
        elif self.slurm:
            raise InputError("slurm resources: only for the slurm executor (--executor slurm)")
        object.__setattr__(self, "eval_limit", _positive_int(self.eval_limit, "eval limit"))
        n = len(self.ratios) * len(self.seeds) * len(self.budgets)
        if n > MAX_JOBS:
            raise InputError(f"sweep: {n} jobs is more than the {MAX_JOBS} one sweep may queue")

    @classmethod
    def build(cls, *, model: str, dataset: str, ratios, budget_kind: str, budgets, seeds=None, seed_list=None,
              mode: str = "rank", targets: str = "", alpha_rule: str = "scaled", alpha=2.0,
              train: TrainSettings | None = None, evaluate: bool = True, eval_split: str | None = "validation",
              eval_limit=None, gpus_per_job: int | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
              executor: str = "local", slurm=None) -> SweepSpec:
        """From user text (CLI flags, form fields); bad values raise one-line InputErrors.

        `gpus_per_job=None` means one GPU per job when the machine has any, else CPU jobs. With
        `executor="slurm"`, `slurm` is a SlurmResources (or its dict); GPUs per node left open become 1 when
        the partition's nodes have GPUs, else 0 (this asks the cluster: no Slurm -> InputError saying what
        is needed).
        """
        model, dataset = str(model or "").strip(), str(dataset or "").strip()
        for name, value in (("model", model), ("dataset", dataset)):
            if value and Path(value).expanduser().exists():  # jobs run from the project root: pin local paths
                value = str(Path(value).expanduser().resolve())
            if name == "model":
                model = value
            else:
                dataset = value
        executor = str(executor or "local").strip().lower()
        if executor == "slurm":
            from toolkit.jobs.slurm.executor import SlurmResources, resolve

            res = slurm if isinstance(slurm, SlurmResources) else SlurmResources.from_dict(slurm)
            if res.gpus_per_node is None and gpus_per_job is not None:
                res = SlurmResources.from_dict({**res.to_dict(), "gpus_per_node": gpus_per_job})
            slurm = resolve(res)
            gpus_per_job = slurm.gpus
        elif gpus_per_job is None:
            from toolkit.jobs.worker import detect_gpus

            gpus_per_job = 1 if detect_gpus() else 0
        return cls(model=model, dataset=dataset, ratios=parse_ratios(ratios), budgets=parse_budgets(budget_kind, budgets),
                   seeds=parse_seeds(seeds, seed_list), mode=mode, targets=targets or "", alpha_rule=alpha_rule,
                   alpha=_positive_float(alpha, "alpha") or 2.0, train=train or TrainSettings(),
                   eval_split=((eval_split or "validation").strip() if evaluate else None), eval_limit=eval_limit,
                   gpus_per_job=gpus_per_job, max_attempts=max_attempts, executor=executor, slurm=slurm)

    def normalised(self) -> dict:
        d = asdict(self)
        d["ratios"], d["seeds"] = list(self.ratios), list(self.seeds)
        d["budgets"] = [[b.kind, b.value] for b in self.budgets]
        for key in ("max_attempts", "executor", "slurm"):  # how and where it runs does not change what it computes
            d.pop(key)
        return d

    @property
    def gpus_per_node(self) -> int:
        """GPUs of each job on one node: the processes its train step starts (DDP when > 1)."""
        return (self.slurm.gpus_per_node or 0) if self.executor == "slurm" else self.gpus_per_job

    @property
    def sweep_id(self) -> str:
        blob = json.dumps(self.normalised(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PlannedJob:
    """One job of a plan, with what its allocation costs."""

    id: str
    name: str
    ratio: str
    seed: int
    budget: Budget
    ranks: tuple[int, int, int]
    params: int
    budget_params: int | None
    budget_error: float | None
    output_dir: str
    steps: tuple[tuple[str, ...], ...]

    def row(self) -> dict:
        return {"job": self.id, "name": self.name, "ratio": self.ratio, "seed": self.seed, "budget": str(self.budget),
                "ranks v:p:l": ":".join(map(str, self.ranks)), "trainable params": self.params,
                "budget params": self.budget_params,
                "budget error %": None if self.budget_error is None else round(self.budget_error, 3),
                "output": self.output_dir}


@dataclass(frozen=True)
class SweepPlan:
    spec: SweepSpec
    sweep_id: str
    jobs: tuple[PlannedJob, ...]
    warnings: tuple[str, ...] = ()
    """budget errors let through by allow_budget_error, ratios merged because caps made them identical"""

    @property
    def short_id(self) -> str:
        return self.sweep_id[:8]

    def rows(self) -> list[dict]:
        return [j.row() for j in self.jobs]

    def to_dict(self) -> dict:
        return {"sweep": self.sweep_id, "spec": self.spec.normalised(), "jobs": self.rows(),
                "warnings": list(self.warnings)}


def _steps(spec: SweepSpec, ratio: str, budget: Budget, seed: int, output: str) -> tuple[tuple[str, ...], ...]:
    train = [PYTHON, "-m", "toolkit", "train", "--model", spec.model, "--dataset", spec.dataset, "--ratio", ratio,
             "--mode", spec.mode, f"--budget-{budget.kind}", f"{budget.value:g}"]
    if spec.targets:
        train += ["--targets", spec.targets]
    train += ["--alpha-rule", spec.alpha_rule, "--alpha", f"{spec.alpha:g}", "--seed", str(seed),
              *spec.train.argv(), "--output", output, "--resume"]
    if spec.gpus_per_job > 1:  # DDP: one process per GPU (and per node on Slurm), the global batch kept
        train = [PYTHON, "-m", "toolkit.training.distributed", "--nproc-per-node", str(spec.gpus_per_node), "--", *train[1:]]
    steps = [tuple(train)]
    if spec.eval_split:
        evaluate = [PYTHON, "-m", "toolkit", "evaluate", "--adapter", output, "--dataset", spec.dataset,
                    "--split", spec.eval_split]
        if spec.eval_limit:
            evaluate += ["--limit", str(spec.eval_limit)]
        steps.append(tuple(evaluate))
    return tuple(steps)


def plan_sweep(spec: SweepSpec, *, structure=None, budget_tolerance: float | None = None,
               allow_budget_error: bool | None = None) -> SweepPlan:
    """Validate a sweep and allocate each of its jobs, writing nothing (InputError on any bad input).

    `structure` reuses an already loaded `ModelStructure` of `spec.model` (the app caches it). An arm whose
    |budget error| exceeds `budget_tolerance` (%, default 1) is refused unless `allow_budget_error` turns that
    into a plan warning; ratios whose allocations come out identical (caps) are queued once, with a warning.
    Both default to the spec's fields of the same names when it has them.
    """
    from toolkit.jobs.worker import detect_gpus

    if spec.executor == "slurm":
        from toolkit.jobs.slurm.executor import check_resources

        check_resources(spec.slurm)
    elif spec.gpus_per_job:
        gpus = detect_gpus()
        if spec.gpus_per_job > len(gpus):
            raise InputError(f"gpus per job: each job asks for {spec.gpus_per_job} GPU(s), but this machine has "
                             f"{len(gpus)}{' (' + ', '.join(gpus) + ')' if gpus else ''}")
    check_writable(jobs_dir())
    try:
        check_writable(adapters_dir())
    except InputError:
        raise InputError(f"adapters folder: cannot write to '{adapters_dir()}'; set CMBA_ADAPTERS_DIR to a "
                         "writable folder") from None
    from toolkit.calculator.allocation import allocate
    from toolkit.calculator.spec import AllocationSpec, AlphaRule, Targets
    from toolkit.calculator.structure import load_structure

    structure = structure or load_structure(spec.model)
    targets = Targets.parse(spec.targets)
    alpha = AlphaRule(spec.alpha_rule, spec.alpha)
    sweep_id = spec.sweep_id
    model = _slug(spec.model)
    jobs = []
    from toolkit.calculator.checks import BUDGET_TOLERANCE, budget_problem, duplicate_arms

    tolerance = budget_tolerance if budget_tolerance is not None else getattr(spec, "budget_tolerance", BUDGET_TOLERANCE)
    allow = allow_budget_error if allow_budget_error is not None else getattr(spec, "allow_budget_error", False)
    warnings = []
    for budget in spec.budgets:
        arms = {ratio: allocate(structure, AllocationSpec(ratio=Ratio.parse(ratio), budget=budget, mode=spec.mode,
                                                          targets=targets, alpha=alpha)) for ratio in spec.ratios}
        problems = [p for p in (budget_problem(a, label=r, tolerance=tolerance) for r, a in arms.items()) if p]
        if problems and not allow:
            raise InputError(f"budget tolerance: {'; '.join(problems)} (lower it to a warning with "
                             "--allow-budget-error, or change --budget-tolerance)")
        warnings += problems
        for same in duplicate_arms(arms):
            warnings.append(f"ratios {', '.join(same)} give identical allocations at {budget} (caps); queued once "
                            f"as {same[0]}")
            for ratio in same[1:]:
                del arms[ratio]
        for ratio, a in arms.items():
            for seed in spec.seeds:
                name = f"{model}-r{ratio.replace(':', '-')}-{_budget_tag(budget)}-s{seed}"
                output = str(adapters_dir().resolve() / f"{name}-{sweep_id[:8]}")
                jobs.append(PlannedJob(id=f"{sweep_id[:8]}-{len(jobs) + 1:02d}", name=name, ratio=ratio, seed=seed,
                                       budget=budget, ranks=a.ranks(), params=a.total, budget_params=a.budget,
                                       budget_error=a.budget_error, output_dir=output,
                                       steps=_steps(spec, ratio, budget, seed, output)))
    return SweepPlan(spec=spec, sweep_id=sweep_id, jobs=tuple(jobs), warnings=tuple(warnings))


@dataclass(frozen=True)
class SubmitResult:
    sweep_id: str
    created: bool
    """False: this exact sweep was already queued (nothing new was written)"""
    jobs: tuple[Job, ...]


def submit_sweep(plan: SweepPlan, *, store: JobStore | None = None) -> SubmitResult:
    """Queue a planned sweep in one transaction (idempotent: the sweep id is the spec's hash)."""
    store = store or JobStore()
    spec = plan.spec
    new = [NewJob(id=j.id, name=j.name, steps=j.steps, output_dir=j.output_dir, gpus=plan.spec.gpus_per_job,
                  max_attempts=plan.spec.max_attempts, executor=spec.executor,
                  resources=spec.slurm.to_dict() if spec.executor == "slurm" else {},
                  meta={"ratio": j.ratio, "seed": j.seed, "budget": str(j.budget), "ranks": list(j.ranks),
                        "params": j.params, "budget_error": j.budget_error, "model": plan.spec.model,
                        "dataset": plan.spec.dataset})
           for j in plan.jobs]
    created, jobs = store.submit_sweep(plan.sweep_id, plan.spec.normalised(), new)
    return SubmitResult(sweep_id=plan.sweep_id, created=created, jobs=tuple(jobs))


# -------------------------------------------------------------------------------------- progress

def read_metrics(output_dir: str | Path | None) -> list[dict]:
    """Every complete line of `<output_dir>/metrics.jsonl` (a line being written is skipped)."""
    if not output_dir:
        return []
    try:
        text = (Path(output_dir) / "metrics.jsonl").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def last_metrics(output_dir: str | Path | None) -> dict | None:
    """The last complete metrics line, read from the end of the file."""
    if not output_dir:
        return None
    for line in reversed(tail_lines(Path(output_dir) / "metrics.jsonl", 3)):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            return row
    return None


def step_name(step) -> str:
    """'train', 'evaluate', ... for `python -m toolkit <command>` steps, else the program's name."""
    step = list(step)
    for i in range(len(step) - 2):  # `python -m toolkit train`, also behind `-m toolkit.training.distributed ... --`
        if step[i:i + 2] == ["-m", "toolkit"]:
            return step[i + 2]
    return Path(step[1] if step and step[0] == PYTHON and len(step) > 1 else step[0]).name if step else "?"


def job_scores(job: Job) -> dict[str, float]:
    """{eval tag: overall accuracy %} from `<output>/eval/*/results.json`."""
    scores = {}
    if job.output_dir:
        for path in sorted(Path(job.output_dir).glob("eval/*/results.json")):
            try:
                scores[path.parent.name] = json.loads(path.read_text())["scores"]["overall"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return scores


def job_progress(job: Job, *, log_lines: int = 20) -> dict:
    """State + progress of one job for the UI/CLI: step/max_steps, loss, ETA, current phase, log tail."""
    m = last_metrics(job.output_dir) or {}
    step, max_steps = m.get("step"), m.get("max_steps")
    fraction = None
    if isinstance(step, (int, float)) and isinstance(max_steps, (int, float)) and max_steps > 0:
        fraction = max(0.0, min(1.0, step / max_steps))
    if job.state is JobState.SUCCEEDED:
        fraction = 1.0
    return {
        "id": job.id, "name": job.name, "sweep": job.sweep_id, "state": job.state.value,
        "phase": step_name(job.steps[min(job.step_index, len(job.steps) - 1)]) if job.steps else None,
        "step": step, "max_steps": max_steps, "fraction": fraction, "loss": m.get("loss"), "eta_s": m.get("eta_s"),
        "attempts": job.attempts, "max_attempts": job.max_attempts, "reason": job.reason, "message": job.message,
        "scores": job_scores(job), "meta": job.meta, "output_dir": job.output_dir,
        "executor": job.executor, "engine_id": job.engine_id, "gpu_ids": job.gpu_ids,
        "log_tail": tail_lines(job.log_path, log_lines),
    }


def sweep_progress(sweep: str, *, store: JobStore | None = None, log_lines: int = 0) -> list[dict]:
    """`job_progress` of every job of a sweep (id or unique prefix)."""
    store = store or JobStore()
    return [job_progress(j, log_lines=log_lines) for j in store.list(sweep=store.resolve_sweep(sweep))]


def loss_curves(jobs) -> list[dict]:
    """Rows {job, name, ratio, seed, step, loss} of every job's metrics, for one overlaid chart."""
    rows = []
    for job in jobs:
        for m in read_metrics(job.output_dir):
            if m.get("step") is not None and m.get("loss") is not None:
                rows.append({"job": job.id, "name": job.name, "ratio": job.meta.get("ratio"),
                             "seed": job.meta.get("seed"), "step": m["step"], "loss": m["loss"]})
    return rows
