"""Sweeps: ratios x seeds (x budgets) of one model, dataset and training setup, queued as one group of jobs.

    spec = SweepSpec.build(model="demo", dataset="synthetic:shapes", ratios="1:1:1,1:4:1", seeds=3,
                           budget_kind="rank", budgets="8", train={"max_steps": 200, "lr": "5e-3"})
    plan = plan_sweep(spec)          # validates everything, allocates every job; writes nothing
    plan.rows()                      # what each job costs: ranks v:p:l, trainable params, budget error
    result = submit_sweep(plan)      # one transaction; the same spec twice creates the sweep once

A sweep is the base settings every job shares (`base`: any `TrainSettings` field, model, dataset, patterns, columns,
lr, ...) and its axes: the sweep sets the per-job fields (`SWEPT`: ratio, budget, seed, output, resume, the
allocation's hash). Every
job's settings are built (and so validated, exactly as `train` validates them) when the spec is, so a bad value
is refused before anything is queued. A job stores its settings as data: `Job.settings` = {"train": TrainSettings
fields, "evaluate": EvalSettings fields}, and its steps are `train --settings-json <those>` (then `evaluate
--settings-json ...` on `eval_split`). The train step carries the sha256 of the planned LoraConfig and refuses
to train another allocation (toolkit.training.settings.check_allocation).

The sweep id is a hash of the normalised spec (ratios, budgets and seeds sorted, numbers canonical, training
fields left at their defaults omitted), so a double click or a re-run finds the existing sweep instead of
queueing it again (re-run a finished job with `jobs retry`). Job `k` of sweep `<id>` is `<id[:8]>-<k>`, named
`<model>-r<v>-<p>-<l>-<budget>-s<seed>` (budget `b8` = uniform rank 8, `p20000000` = params, `pct0.3` =
percent), and trains into the flat adapter store as `adapters_dir()/<job name>-<id[:8]>` (or `output/...`).
Each train step resumes (so retries and crash recovery continue from the last checkpoint).

Where jobs run: `executor="local"` (the worker's subprocesses, the default) or `"slurm"` with per-job
`SlurmResources` (toolkit/slurm.py; checked against the cluster before anything is queued). Neither changes
what a sweep computes, so neither is part of its id. A job with more than one GPU (local `gpus_per_job`, or
Slurm GPUs per node x nodes) trains through `python -m toolkit.training.distributed` (DDP, the global batch kept).

Packed (`pack=True`, `sweep --pack`): the arms of each budget are grouped into as few jobs of at most `pack_size`
arms as hold them (`pack_jobs`), each job one `python -m toolkit pack` step (toolkit.study.packrun: the arms
trained in one process on one copy of the base, toolkit.training.pack, then each evaluated there); the job's meta
lists its arms ({"ratio", "seed", "output_dir", ...}), its `output_dir` is its first arm's. One device per pack
(local executor, or one sbatch per pack on Slurm); a pack whose forward runs out of GPU memory splits it in two
and goes on. With a halving search every arm of the (one) budget is in one pack, and the rungs are evaluation
points inside it (toolkit.study.packsearch), not new jobs. `pack` and `pack_size` are left out of the id while unset.

The sweep's own options (axes, evaluation, queueing, executor) are the fields of toolkit.study.settings
`SweepSettings`: their defaults and bounds are defined there once, and `SweepSpec`, `build` and `from_options` (a
sweep from those options as `sweep`'s flags give them) take them from there.

Before queueing, `submit_sweep` runs the pre-flight checks of toolkit.study.preflight (weights, data, 4-bit);
toolkit.study.estimate says how long the sweep will take from earlier runs' measured step rates.
Progress for the UI and CLI: toolkit.study.progress (`job_progress(job)`, `sweep_progress`, `loss_curves`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.calculator.spec import Budget, Ratio, parse_int
from toolkit.errors import InputError
from toolkit.fields import check_exclusive, settings_field
from toolkit.paths import adapters_dir, jobs_dir
from toolkit.queue.executor import PYTHON
from toolkit.queue.store import EXECUTORS, Job, JobStore, NewJob, check_writable
from toolkit.study.settings import SLURM_OPTIONS, SweepSettings
from toolkit.training.settings import EvalSettings, TrainSettings, lora_sha256, model_defaults

if TYPE_CHECKING:
    from toolkit.queue.slurm.cluster import SlurmResources
from toolkit.calculator.checks import BUDGET_TOLERANCE, budget_problem, duplicate_arms
from toolkit.runs import base_folder, slug

MAX_JOBS = 500
OPTION = SweepSettings.defaults()
"""{option: default} of a sweep's own options (toolkit.study.settings): what `build` and `from_options` fill in"""
EVAL_SPLIT = OPTION["eval_split"]
"""the split a sweep's evaluate step scores unless told otherwise: the evaluation settings' own default"""
MAX_SEEDS = settings_field(SweepSettings, "seeds").upper
"""most seeds one sweep trains (the launch form's bound too)"""
DEFAULT_EXECUTOR = OPTION["executor"]
"""where a sweep's jobs run unless told: the worker's own processes (else "slurm")"""
SWEPT = ("ratio", "audit", "budget_rank", "budget_params", "budget_percent", "seed", "output", "name", "resume",
         "overwrite", "expect_lora_sha256")
"""TrainSettings fields a sweep sets per job (its axes) or refuses: not part of `SweepSpec.base`"""
TOP_LEVEL = {"model": "model", "dataset": "dataset", "mode": "mode", "targets": "targets", "alpha_rule": "alpha_rule",
             "alpha_value": "alpha"}
"""base fields a sweep's id hashes at the top level under these names, as it did before the settings tree (so a
sweep planned again finds the one queued before)"""


def _bounds(name: str) -> tuple:
    """(lower, upper) bound of a sweep option (toolkit.study.settings), as whole numbers where they are."""
    f = settings_field(SweepSettings, name)
    return f.lower, f.upper


def _positive_int(value, name: str, *, zero: bool = False) -> int | None:
    number = parse_int(value, name)
    if number is None:
        return None
    if number < (0 if zero else 1):
        raise InputError(f"{name}: must be {'>= 0' if zero else '>= 1'}, got {number}")
    return number


def suggested_settings(model: str) -> dict:
    """Launch-form defaults: the model's training defaults (`model_defaults`, which `train` also applies) and
    the sweep's size. For the demo model each run trains in about a minute on one CPU core and the allocation
    shows in the results (bench/RESULTS.md, demo study)."""
    d = model_defaults(model)
    demo = model == "demo"
    return {"seeds": 2 if demo else 3, "max_steps": d["max_steps"] or 200, "batch_size": d["batch_size"],
            "lr": d["lr"], "eval_limit": 400 if demo else 500}


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
    n = OPTION["seeds"] if count in (None, "") else _positive_int(count, "seeds")
    if n > MAX_SEEDS:
        raise InputError(f"seeds: at most {MAX_SEEDS} seeds per sweep, got {n}")
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
    return slug(Path(text.rstrip("/")).name if "/" in text else text, keep=".", lower=True)


def _check_base_fields(base: dict) -> None:
    known = set(TrainSettings.model_fields)
    for key in base:
        flag = "--" + str(key).replace("_", "-")
        if key not in known:
            raise InputError(f"train: '{key}' is not a training setting (fields: {', '.join(sorted(known - set(SWEPT)))})")
        if key in SWEPT:
            raise InputError(f"train: {flag} is set by the sweep itself (per job, as one of its axes)")


@dataclass(frozen=True)
class SweepSpec:
    """Everything that defines a sweep: the training settings its jobs share (`base`) and its axes (ratios, budgets,
    seeds); its normalised form hashes to the sweep id."""

    base: dict[str, Any]
    """TrainSettings fields every job shares (model and dataset included), in `to_dict` form; those at their
    default are left out (`settings` is them as TrainSettings, with the first arm's axes)"""
    ratios: tuple[str, ...]
    """canonical V:P:L ratios, one arm each"""
    budgets: tuple[Budget, ...]
    """budgets of one kind; every ratio is trained at each"""
    seeds: tuple[int, ...] = tuple(range(OPTION["seeds"]))
    """training seeds of every arm"""
    eval_split: str | None = EVAL_SPLIT
    """split the evaluate step scores (None = no evaluate step)"""
    eval_limit: int | None = None
    """evaluate on at most N questions"""
    reference: bool = OPTION["reference"]
    """also queue the base model's evaluation on the same questions (the comparison's reference row)"""
    output: str | None = None
    """folder the sweep's adapters go in (None = the adapter store)"""
    name: str | None = None
    """job and adapter names start with this instead of the model's name"""
    gpus_per_job: int = 0
    """GPUs of each job (Slurm: GPUs per node x nodes)"""
    max_attempts: int = OPTION["max_attempts"]
    """runs allowed when a worker is lost"""
    executor: str = DEFAULT_EXECUTOR
    """local | slurm"""
    slurm: SlurmResources | None = None
    """the resources of each job when executor is slurm (a dict is read as SlurmResources)"""
    design: str | None = None
    """the study design the ratios came from ('simplex-lattice:3', toolkit.study.design); arms the calculator
    cannot budget-match are then left out with a warning instead of refusing the sweep"""
    search: dict | None = None
    """successive halving over the arms (toolkit.study.search.Search.to_dict()); None = train every arm fully"""
    retrieval: int | None = None
    """also measure image-text retrieval on this many image-caption pairs (toolkit.evaluation.retrieval)"""
    retrieval_dataset: str | None = None
    """the image-caption data of `retrieval` (default: synthetic:shapes for a synthetic training set)"""
    confirms: str | None = None
    """the study sweep whose recommendation this sweep confirms (toolkit.study.confirm), linking the two"""
    pack: bool = OPTION["pack"]
    """train the arms of each budget in packs, one job per pack (`python -m toolkit pack`: one process, one copy of
    the base, each arm evaluated there too) instead of one job per arm"""
    pack_size: int | None = None
    """at most this many arms per pack (None: every arm of a budget, up to packrun.MAX_ARMS; CPU jobs only)"""

    def __post_init__(self):
        if not str(self.base.get("model") or "").strip():
            raise InputError("model: choose a preset, a local folder with config.json, or a Hub id")
        if not str(self.base.get("dataset") or "").strip():
            raise InputError("dataset: give a dataset, e.g. synthetic:shapes")
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
        lo, _ = _bounds("gpus_per_job")
        if not isinstance(self.gpus_per_job, int) or self.gpus_per_job < lo:
            raise InputError(f"gpus per job: must be a whole number >= {lo}, got {self.gpus_per_job!r}")
        lo, hi = _bounds("max_attempts")
        if not isinstance(self.max_attempts, int) or not lo <= self.max_attempts <= hi:
            raise InputError(f"max attempts: must be a whole number in {lo}..{hi}, got {self.max_attempts!r}")
        if self.executor not in EXECUTORS:
            raise InputError(f"executor: must be one of {', '.join(EXECUTORS)}, got '{self.executor}'")
        if self.executor == "slurm":
            from toolkit.queue.slurm.cluster import SlurmResources

            res = self.slurm if isinstance(self.slurm, SlurmResources) else SlurmResources.from_dict(self.slurm)
            object.__setattr__(self, "slurm", res)
            if res.gpus_per_node is not None:
                object.__setattr__(self, "gpus_per_job", res.gpus)
        elif self.slurm:
            raise InputError("slurm resources: only for the slurm executor (--executor slurm)")
        object.__setattr__(self, "eval_limit", _positive_int(self.eval_limit, "eval limit"))
        if self.eval_limit is not None and self.eval_limit > (hi := _bounds("eval_limit")[1]):
            raise InputError(f"eval limit: must be <= {hi:,}, got {self.eval_limit:,}")
        n = len(self.ratios) * len(self.seeds) * len(self.budgets)
        if n > MAX_JOBS:
            raise InputError(f"sweep: {n} jobs is more than the {MAX_JOBS} one sweep may queue")
        if self.name is not None and (not self.name.strip() or "/" in self.name or self.name.startswith(".")):
            raise InputError(f"name: '{self.name}' must be a plain name (no '/', not starting with '.')")
        _check_base_fields(self.base)
        if self.retrieval is not None:
            lo, hi = _bounds("retrieval")
            if not isinstance(self.retrieval, int) or not lo <= self.retrieval <= hi:
                raise InputError(f"retrieval: the number of image-caption pairs must be in {lo}..{hi}, got {self.retrieval!r}")
            if not self.retrieval_dataset:
                if not str(self.dataset).startswith("synthetic:"):
                    raise InputError("retrieval dataset: give an image-caption dataset (--retrieval-dataset) for "
                                     "non-synthetic training data")
                object.__setattr__(self, "retrieval_dataset", "synthetic:shapes")
        if self.search and not self.eval_split:
            raise InputError("search: successive halving decides on evaluations; do not combine it with --no-eval")
        if self.search and self.gpus_per_node > 1:
            raise InputError("search: successive halving runs one process per job; use --gpus-per-job 1")
        self._check_pack()
        # every job's settings validate exactly as `train` validates them: build the first one now
        sample = self.settings.changed()
        object.__setattr__(self, "base", {k: sample[k] for k in sorted(self.base) if k in sample})
        if self.eval_split:
            self.eval_settings(adapter=str(adapters_dir()))
            train_split = self.settings.split
            if self.eval_split == train_split and not self.settings.holdout:
                raise InputError(f"eval split: the jobs train on split '{train_split}' and would be evaluated on it "
                                 f"(their own training questions); evaluate on another split (--eval-split) or hold "
                                 f"out images of it (--holdout 0.1)")

    def _check_pack(self) -> None:
        if not self.pack:
            if self.pack_size is not None:
                raise InputError("pack size: only with --pack")
            return
        lo, hi = _bounds("pack_size")
        if self.pack_size is not None and (not isinstance(self.pack_size, int) or not lo <= self.pack_size <= hi):
            raise InputError(f"pack size: must be a whole number in {lo}..{hi}, got {self.pack_size!r}")
        if self.search and len(self.budgets) > 1:
            raise InputError("pack: a search inside a pack decides over one budget's arms; give one budget")
        if self.gpus_per_node > 1:
            raise InputError("pack: a pack trains in one process on one device; use --gpus-per-job 0 or 1")
        if self.executor == "slurm" and self.slurm.nodes > 1:
            raise InputError("pack: a pack trains in one process on one node; use --nodes 1")

    @classmethod
    def build(cls, *, model: str, dataset: str, ratios, budget_kind: str, budgets, seeds=None, seed_list=None,
              mode: str | None = None, targets: str | None = None, alpha_rule: str | None = None, alpha=None,
              train: dict | None = None, evaluate: bool = OPTION["evaluate"], eval_split: str | None = EVAL_SPLIT,
              eval_limit=None, output: str | None = None, name: str | None = None, gpus_per_job: int | None = None,
              max_attempts: int | None = None, executor: str | None = None, slurm=None,
              reference: bool = OPTION["reference"], design: str | None = None, search=None, retrieval=None,
              retrieval_dataset: str | None = None, pack: bool = OPTION["pack"], pack_size=None) -> SweepSpec:
        """From user text (CLI flags, form fields); bad values raise one-line InputErrors. What is left out (None)
        takes the option's default (toolkit.study.settings).

        `train`: {TrainSettings field: value (text is fine)} shared by every job, e.g. {"max_steps": "200"};
        `model`, `dataset`, `mode`, `targets`, `alpha_rule` and `alpha` (--alpha) are such fields too.
        `gpus_per_job=None` means one GPU per job when the machine has any, else CPU jobs. With
        `executor="slurm"`, `slurm` is a SlurmResources (or its dict); GPUs per node left open become 1 when
        the partition's nodes have GPUs, else 0 (this asks the cluster: no Slurm -> InputError saying what
        is needed). `design` ('simplex-lattice:3') adds its arms to `ratios` (which may then be empty);
        `search` ('halving' or a dict of toolkit.study.search.Search fields) trains them by successive halving.
        `pack` queues one job per pack of at most `pack_size` arms of one budget instead of one per arm.
        """
        if design:
            from toolkit.study.design import Design

            design_ratios = Design.parse(design)
            design = str(design_ratios)
            given = ratios.strip() if isinstance(ratios, str) else list(ratios or [])
            extra = parse_ratios(ratios) if given else ()
            ratios = list(dict.fromkeys([*design_ratios.ratios(), *extra]))
        if search:
            from toolkit.study.search import Search

            search = Search.parse(search, max_steps=(train or {}).get("max_steps")).to_dict()
        model, dataset = str(model or "").strip(), str(dataset or "").strip()
        train = {k: v for k, v in {**dict(train or {}), "mode": mode, "targets": targets, "alpha_rule": alpha_rule,
                                   "alpha_value": alpha}.items() if v is not None}
        for key in ("image_dir",):  # jobs run from the project root: pin local paths
            if train.get(key) and Path(str(train[key])).expanduser().exists():
                train[key] = str(Path(str(train[key])).expanduser().resolve())
        if output:
            output = str(Path(output).expanduser().resolve())
        for name_, value in (("model", model), ("dataset", dataset)):
            if value and Path(value).expanduser().exists():
                value = str(Path(value).expanduser().resolve())
            if name_ == "model":
                model = value
            else:
                dataset = value
        executor = str(executor or DEFAULT_EXECUTOR).strip().lower()
        if executor == "slurm":
            from toolkit.queue.slurm.cluster import SlurmResources, resolve

            res = slurm if isinstance(slurm, SlurmResources) else SlurmResources.from_dict(slurm)
            if res.gpus_per_node is None and gpus_per_job is not None:
                res = SlurmResources.from_dict({**res.to_dict(), "gpus_per_node": gpus_per_job})
            slurm = resolve(res)
            gpus_per_job = slurm.gpus
        elif gpus_per_job is None:
            from toolkit.queue.gpus import detect_gpus

            gpus_per_job = 1 if detect_gpus() else 0
        gpus_per_job = parse_int(gpus_per_job, "gpus per job") if isinstance(gpus_per_job, str) else gpus_per_job
        max_attempts = parse_int(max_attempts, "max attempts") if isinstance(max_attempts, str) else max_attempts
        return cls(base={**train, "model": model, "dataset": dataset}, ratios=parse_ratios(ratios),
                   budgets=parse_budgets(budget_kind, budgets), seeds=parse_seeds(seeds, seed_list),
                   eval_split=((eval_split or EVAL_SPLIT).strip() if evaluate else None), eval_limit=eval_limit,
                   output=output, name=(name or "").strip() or None, gpus_per_job=gpus_per_job,
                   max_attempts=OPTION["max_attempts"] if max_attempts is None else max_attempts, executor=executor,
                   slurm=slurm, reference=bool(reference),
                   design=design or None, search=search or None,
                   retrieval=_positive_int(retrieval, "retrieval"), retrieval_dataset=retrieval_dataset or None,
                   pack=bool(pack), pack_size=_positive_int(pack_size, "pack size"))

    @classmethod
    def from_options(cls, options: dict, *, train: dict | None = None) -> SweepSpec:
        """A sweep from its own options ({SweepSettings field: value}, text is fine: `sweep`'s flags as
        `values_from_args` gives them; left out or None = the option's default) and `train`, the TrainSettings
        fields its jobs share (model and dataset included). One-line InputErrors, as `build`'s."""
        from toolkit.calculator.spec import BUDGET_KINDS

        given = {k: v for k, v in options.items() if v is not None}
        if unknown := sorted(set(given) - set(SweepSettings.model_fields)):
            raise InputError(f"sweep: unknown option '{unknown[0]}' (options: {', '.join(SweepSettings.model_fields)})")
        check_exclusive(SweepSettings, given)  # the budget flags
        o = {**OPTION, **given}
        if not o["ratios"] and not o["design"]:
            raise InputError("ratios: give --ratios V:P:L[,...] or a --design such as simplex-lattice:3")
        kinds = [k for k in BUDGET_KINDS if o[f"budget_{k}"] is not None]
        if not kinds:
            raise InputError("budget: give one of --budget-rank R, --budget-params N, --budget-percent P")
        if "seeds" in given and "seed_list" in given:
            raise InputError("seeds: give --seeds N or --seed-list, not both")
        train = dict(train or {})
        return cls.build(
            model=train.pop("model", None), dataset=train.pop("dataset", None), ratios=o["ratios"],
            budget_kind=kinds[0], budgets=o[f"budget_{kinds[0]}"], seeds=given.get("seeds"),
            seed_list=o["seed_list"], train=train, evaluate=o["evaluate"], eval_split=o["eval_split"],
            eval_limit=o["eval_limit"], output=o["output"], name=o["name"], gpus_per_job=o["gpus_per_job"],
            max_attempts=o["max_attempts"], executor=o["executor"], slurm=_slurm(o, given),
            reference=o["reference"], design=o["design"], search=_search(o, given, train.get("max_steps")),
            retrieval=o["retrieval"], retrieval_dataset=o["retrieval_dataset"], pack=o["pack"],
            pack_size=o["pack_size"])

    def job_settings(self, *, ratio: str, budget: Budget, seed: int, output: str | None = None,
                     lora_hash: str | None = None) -> TrainSettings:
        """The TrainSettings of one job (validated): the base settings at one point of the axes."""
        return TrainSettings.from_dict({
            **self.base, "ratio": ratio, f"budget_{budget.kind}": budget.value, "seed": seed, "output": output,
            "resume": True, "expect_lora_sha256": lora_hash})

    @functools.cached_property
    def settings(self) -> TrainSettings:
        """The base settings as TrainSettings (at the first ratio, budget and seed): defaults resolved."""
        return self.job_settings(ratio=self.ratios[0], budget=self.budgets[0], seed=self.seeds[0])

    @property
    def model(self) -> str:
        return self.base["model"]

    @property
    def dataset(self) -> str:
        return self.base["dataset"]

    def _data(self) -> dict:
        s = self.settings
        return dict(dataset=s.dataset, split=self.eval_split, limit=self.eval_limit, columns=s.columns,
                    image_dir=s.image_dir, holdout=s.holdout, images_anywhere=s.images_anywhere)

    def eval_settings(self, *, adapter: str) -> EvalSettings:
        """The EvalSettings of one job's evaluate step (the training data's columns and image folder)."""
        return EvalSettings(adapter=adapter, **self._data())

    def reference_settings(self) -> EvalSettings:
        """The base model's evaluation on the jobs' questions, under the same quantization as their training."""
        return EvalSettings(base=self.model, revision=self.settings.revision, quantize=self.settings.quantize,
                            **self._data())

    @classmethod
    def from_normalised(cls, stored: dict, **change) -> SweepSpec:
        """The spec of a sweep stored as `normalised()` (the store's sweeps table), with `change` applied."""
        d = {k: v for k, v in stored.items() if k in cls.__dataclass_fields__}
        base = {**(stored.get("train") or {}), **{name: stored[key] for name, key in TOP_LEVEL.items() if key in stored}}
        d.update(base=base, ratios=tuple(stored["ratios"]), seeds=tuple(stored.get("seeds") or (0,)),
                 budgets=tuple(Budget(k, v) for k, v in stored["budgets"]))
        return cls(**{**d, **change})

    def normalised(self) -> dict:
        d = asdict(self)
        defaults = TrainSettings.defaults()
        train = dict(d.pop("base"))
        for name, key in TOP_LEVEL.items():
            d[key] = train.pop(name, defaults[name])
        d["train"] = train
        d["ratios"], d["seeds"] = list(self.ratios), list(self.seeds)
        d["budgets"] = [[b.kind, b.value] for b in self.budgets]
        for key in ("max_attempts", "executor", "slurm"):  # how and where it runs does not change what it computes
            d.pop(key)
        for key in ("train", "output", "name"):  # left out while unset: ids of sweeps without them stay as they were
            if not d[key]:
                d.pop(key)
        if d["reference"]:  # the default: ids of sweeps planned before it existed stay as they were
            d.pop("reference")
        for key in ("design", "search", "retrieval", "retrieval_dataset", "confirms", "pack"):
            if not d[key]:
                d.pop(key)
        if d["pack_size"] is None:  # unset (always, without --pack): ids of unpacked sweeps stay as they were
            d.pop("pack_size")
        return d

    @property
    def gpus_per_node(self) -> int:
        """GPUs of each job on one node: the processes its train step starts (DDP when > 1)."""
        return (self.slurm.gpus_per_node or 0) if self.executor == "slurm" else self.gpus_per_job

    @property
    def sweep_id(self) -> str:
        blob = json.dumps(self.normalised(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _search(o: dict, given: dict, max_steps) -> dict | None:
    """The search options (--search, --rungs, --eta, ...) as toolkit.study.search.Search (a dict), or None."""
    if not o["search"]:
        if any(given.get(k) for k in ("rungs", "eta", "report_split", "controls")) or given.get("confirm") is False:
            raise InputError("search: --rungs, --eta, --report-split, --no-confirm and --controls belong to "
                             "--search halving")
        return None
    from toolkit.study.search import Search

    eta = o["eta"]
    if eta in (None, ""):
        eta = None
    else:
        try:
            eta = float(eta)
        except ValueError:
            raise InputError(f"eta: '{eta}' is not a number") from None
        f = settings_field(SweepSettings, "eta")
        if not eta > f.lower:  # the field's bound (Search refuses it too, with the same line)
            raise InputError(f"eta: must be {f.allowed}, got {eta:g}")
    return Search.parse(o["search"], max_steps=max_steps, rungs=o["rungs"], eta=eta, confirm=bool(o["confirm"]),
                        report_split=o["report_split"], controls=bool(o["controls"])).to_dict()


def _slurm(o: dict, given: dict) -> dict | None:
    """The Slurm resource options as a SlurmResources dict (None for the local executor; InputError if set there)."""
    named = [name for name in SLURM_OPTIONS if name in given]
    if str(o["executor"] or "").strip().lower() != "slurm":
        if named:
            raise InputError(f"{named[0].replace('_', ' ')}: only with --executor slurm")
        return None
    if given.get("gpus_per_job") is not None and given.get("gpus_per_node") is not None:
        raise InputError("gpus per node: give --gpus-per-node (Slurm) or --gpus-per-job, not both")
    return {"partition": o["partition"], "nodes": o["nodes"], "gpus_per_node": o["gpus_per_node"],
            "cpus_per_gpu": o["cpus_per_gpu"], "mem": o["mem"], "time": o["time"], "extra": o["sbatch_extra"] or ""}


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
    settings: dict = field(default_factory=dict)
    """{"train": TrainSettings.to_dict(), "evaluate": EvalSettings.to_dict() or None}: what the steps run"""
    lora_sha256: str = ""
    """sha256 of the planned LoraConfig; the train step refuses any other allocation"""
    kind: str = "train"
    """train (train, then evaluate) | reference (the base model's evaluation alone) | pack (its `arms` trained
    and evaluated in one process)"""
    meta: dict = field(default_factory=dict)
    """more for the job's meta (a halving search's rung, step and evaluated adapter; a pack's arms)"""
    arms: tuple[PlannedJob, ...] = ()
    """a pack's arms: each the train job it would be unpacked (its steps are the pack's)"""

    def row(self) -> dict:
        if self.kind == "pack":
            errors = [a.budget_error for a in self.arms if a.budget_error is not None]
            return {"job": self.id, "name": self.name, "ratio": self.ratio, "seed": None, "budget": str(self.budget),
                    "ranks v:p:l": ", ".join(dict.fromkeys(":".join(map(str, a.ranks)) for a in self.arms)),
                    "trainable params": sum(a.params for a in self.arms), "budget params": self.budget_params,
                    "budget error %": round(max(errors, key=abs), 3) if errors else None,
                    "output": self.output_dir, "arms": len(self.arms)}
        return {"job": self.id, "name": self.name, "ratio": self.ratio,
                "seed": self.seed if self.kind == "train" else None, "budget": str(self.budget),
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
        def job(j: PlannedJob) -> dict:
            d = {**j.row(), "lora_sha256": j.lora_sha256, "kind": j.kind}
            if j.arms:
                d["arms"] = [job(a) for a in j.arms]
            return d

        return {"sweep": self.sweep_id, "spec": self.spec.normalised(), "jobs": [job(j) for j in self.jobs],
                "warnings": list(self.warnings)}


def _steps(spec: SweepSpec, settings: TrainSettings, evaluate: EvalSettings | None) -> tuple[tuple[str, ...], ...]:
    train = [PYTHON, "-m", "toolkit", "train", "--settings-json", settings.to_json()]
    if spec.gpus_per_job > 1:  # DDP: one process per GPU (and per node on Slurm), the global batch kept
        train = [PYTHON, "-m", "toolkit.training.distributed", "--nproc-per-node", str(spec.gpus_per_node), "--", *train[1:]]
    steps = [tuple(train)]
    if evaluate is not None:
        steps.append((PYTHON, "-m", "toolkit", "evaluate", "--settings-json", evaluate.to_json()))
    return tuple(steps) + retrieval_steps(spec, adapter=settings.output)


def retrieval_steps(spec: SweepSpec, *, adapter: str | None = None, base: str | None = None) -> tuple[tuple[str, ...], ...]:
    """The alignment step of a job (toolkit.evaluation.retrieval), when the sweep asks for it."""
    if not spec.retrieval:
        return ()
    who = ("--adapter", adapter) if adapter else ("--base", base)
    return ((PYTHON, "-m", "toolkit", "retrieval", *who, "--dataset", spec.retrieval_dataset,
             "--limit", str(spec.retrieval)),)


def plan_sweep(spec: SweepSpec, *, structure=None, budget_tolerance: float | None = None,
               allow_budget_error: bool | None = None) -> SweepPlan:
    """Validate a sweep and allocate each of its jobs, writing nothing (InputError on any bad input).

    `structure` reuses an already loaded `ModelStructure` of `spec.model` (the app caches it). An arm whose
    |budget error| exceeds `budget_tolerance` (%, default 1) is refused unless `allow_budget_error` turns that
    into a plan warning; ratios whose allocations come out identical (caps) are queued once, with a warning.
    `allow_budget_error` defaults to the sweep's `--allow-budget-error` (a TrainSettings field, so cmba.json
    records it).
    """
    from toolkit.queue.gpus import detect_gpus

    if spec.executor == "slurm":
        from toolkit.queue.slurm.cluster import check_resources

        check_resources(spec.slurm)
    elif spec.gpus_per_job:
        gpus = detect_gpus()
        if spec.gpus_per_job > len(gpus):
            raise InputError(f"gpus per job: each job asks for {spec.gpus_per_job} GPU(s), but this machine has "
                             f"{len(gpus)}{' (' + ', '.join(gpus) + ')' if gpus else ''}")
    check_writable(jobs_dir())
    root = Path(spec.output) if spec.output else adapters_dir()
    try:
        check_writable(root)
    except InputError:
        raise InputError(f"adapters folder: cannot write to '{root}'; set CMBA_ADAPTERS_DIR (or --output) to a "
                         "writable folder") from None
    structure = structure or spec.settings.load_structure()
    sweep_id = spec.sweep_id
    model = _slug(spec.name or spec.model)
    jobs = []
    tolerance = BUDGET_TOLERANCE if budget_tolerance is None else budget_tolerance
    allow = spec.settings.allow_budget_error if allow_budget_error is None else allow_budget_error
    warnings = []
    for budget in spec.budgets:
        def allocate(ratio, budget=budget):
            return spec.job_settings(ratio=ratio, budget=budget, seed=spec.seeds[0]).allocation(structure)

        if spec.design:  # a design's arms the calculator cannot budget-match are left out, not fatal
            from toolkit.study.design import feasible

            kept, dropped = feasible(spec.ratios, allocate)
            warnings += [f"design arm left out at {budget}: {d}" for d in dropped]
            arms = {ratio: allocate(ratio) for ratio in kept}
            for ratio, a in list(arms.items()):
                if (p := budget_problem(a, label=ratio, tolerance=tolerance)) and not allow:
                    warnings.append(f"design arm left out at {budget}: {p}")
                    del arms[ratio]
            if not arms:
                raise InputError(f"design: no arm of {spec.design} can be budget-matched at {budget}")
        else:
            arms = {ratio: allocate(ratio) for ratio in spec.ratios}
        problems = [p for p in (budget_problem(a, label=r, tolerance=tolerance) for r, a in arms.items()) if p]
        if problems and not allow:
            raise InputError(f"budget tolerance: {'; '.join(problems)} (lower it to a warning with "
                             "--allow-budget-error)")
        warnings += problems
        for same in duplicate_arms(arms):
            warnings.append(f"ratios {', '.join(same)} give identical allocations at {budget} (caps); queued once "
                            f"as {same[0]}")
            for ratio in same[1:]:
                del arms[ratio]
        first = len(jobs)
        for ratio, a in arms.items():
            lora_hash = lora_sha256(a)
            for seed in spec.seeds:
                name = f"{model}-r{ratio.replace(':', '-')}-{_budget_tag(budget)}-s{seed}"
                output = str(root.resolve() / f"{name}-{sweep_id[:8]}")
                settings = spec.job_settings(ratio=ratio, budget=budget, seed=seed, output=output, lora_hash=lora_hash)
                evaluate = spec.eval_settings(adapter=output) if spec.eval_split else None
                steps, meta = _steps(spec, settings, evaluate), {}
                if spec.search and not spec.pack:  # successive halving: every arm trains to the first rung first
                    from toolkit.study.search import RUNG_HOOK, rung_steps

                    until = spec.search["rungs"][0]
                    steps, adapter = rung_steps(settings.to_dict(), evaluate.to_dict(), until=until, python=PYTHON,
                                                retrieval=retrieval_steps(spec, adapter=output))
                    meta = {"rung": 1, "until": until, "adapter": adapter, "on_finish": RUNG_HOOK,
                            **({"retrieval_steps": [list(x) for x in retrieval_steps(spec, adapter=output)]}
                               if spec.retrieval else {})}
                jobs.append(PlannedJob(id=f"{sweep_id[:8]}-{len(jobs) + 1:02d}", name=name, ratio=ratio, seed=seed,
                                       budget=budget, ranks=a.ranks(), params=a.total, budget_params=a.budget,
                                       budget_error=a.budget_error, output_dir=output, meta=meta,
                                       steps=steps, lora_sha256=lora_hash,
                                       settings={"train": settings.to_dict(),
                                                 "evaluate": evaluate.to_dict() if evaluate else None}))
        if spec.pack:
            jobs[first:] = pack_jobs(spec, jobs[first:], model=model, budget=budget, sweep_id=sweep_id, number=first + 1)
    if spec.eval_split and spec.reference:
        ref = spec.reference_settings()
        jobs.append(PlannedJob(id=f"{sweep_id[:8]}-{len(jobs) + 1:02d}", name=f"{model}-base-reference",
                               ratio="base model", seed=0, budget=spec.budgets[0], ranks=(0, 0, 0), params=0,
                               budget_params=None, budget_error=None, output_dir=str(base_folder(spec.model, root=adapters_dir())),
                               steps=((PYTHON, "-m", "toolkit", "evaluate", "--settings-json", ref.to_json()),
                                      *retrieval_steps(spec, base=spec.model)),
                               settings={"train": None, "evaluate": ref.to_dict()}, kind="reference"))
    return SweepPlan(spec=spec, sweep_id=sweep_id, jobs=tuple(jobs), warnings=tuple(warnings))


MAX_STEP_CHARS = 120_000
"""the longest argument a job step may carry (Linux refuses one over 128 KiB)"""


def pack_jobs(spec: SweepSpec, arms: list[PlannedJob], *, model: str, budget: Budget, sweep_id: str,
              number: int) -> list[PlannedJob]:
    """The arms of one budget (train jobs) grouped into as few pack jobs of at most `spec.pack_size` arms as hold
    them, of sizes that differ by one at most, numbered from `number`. Arms are taken seed by seed, so a pack holds
    the ratios of a seed side by side (what a pack shares, its machine and its fate, is spread over the ratios
    rather than falling on one). Each job is one `python -m toolkit pack` step (then the arms' retrieval steps),
    its arms in its meta ("arms": ratio, seed, output_dir, ...) and settings ("arms": {"train", "evaluate"} each;
    "train" and "evaluate" are its first arm's, for readers of one-arm jobs)."""
    from toolkit.study.packrun import MAX_ARMS, PackSettings

    arms = sorted(arms, key=lambda a: a.seed)  # seed-major (stable: ratios in plan order): a pack holds every ratio
    count = -(-len(arms) // (spec.pack_size or MAX_ARMS))  # packs needed; their sizes then differ by one at most
    search = None
    if spec.search:  # successive halving inside the pack (toolkit.study.packsearch): every arm in the one pack
        from toolkit.study.packsearch import PACK_SEARCH_HOOK

        if count > 1:
            raise InputError(f"pack size: a search inside a pack decides over all {len(arms)} arms at each rung, so "
                             f"they must fit one pack; give --pack-size {len(arms)} or more (at most {MAX_ARMS}), "
                             f"or drop --pack")
        search = {"sweep": sweep_id, "search": spec.search}
    cuts = [len(arms) * k // count for k in range(count + 1)]
    groups = [arms[a:b] for a, b in zip(cuts, cuts[1:])]
    out = []
    for k, group in enumerate(groups, start=1):
        packed = [PackSettings.arm_dict(a.settings["train"], a.settings["evaluate"]) for a in group]
        text = PackSettings.from_dict({"arms": packed, **({"search": search} if search else {})}).to_json()
        if len(text) > MAX_STEP_CHARS:
            raise InputError(f"pack size: {len(group)} arms' settings are {len(text):,} characters, more than one "
                             f"command-line argument holds; give a smaller --pack-size")
        steps = ((PYTHON, "-m", "toolkit", "pack", "--settings-json", text),
                 *(s for a in group for s in retrieval_steps(spec, adapter=a.output_dir)))
        job_id = f"{sweep_id[:8]}-{number + k - 1:02d}"
        group = [replace(a, id=f"{job_id}.{i}") for i, a in enumerate(group, start=1)]
        first = group[0]
        meta = {"arms": [{"ratio": a.ratio, "seed": a.seed, "output_dir": a.output_dir, "ranks": list(a.ranks),
                          "params": a.params, "budget_error": a.budget_error, "lora_sha256": a.lora_sha256}
                         for a in group]}
        if search:  # its rungs' snapshots (toolkit.study.confirm.sweep_rows reads them), its follow-up hook
            meta.update(rungs=list(spec.search["rungs"][:-1]), on_finish=PACK_SEARCH_HOOK)
        out.append(PlannedJob(
            id=job_id, name=f"{model}-pack-{_budget_tag(budget)}-{k}of{len(groups)}",
            ratio=",".join(dict.fromkeys(a.ratio for a in group)), seed=None, budget=budget, ranks=first.ranks,
            params=sum(a.params for a in group), budget_params=first.budget_params, budget_error=first.budget_error,
            output_dir=first.output_dir, steps=steps, kind="pack", meta=meta, arms=tuple(group),
            settings={**first.settings, "arms": packed}))
    return out


@dataclass(frozen=True)
class SubmitResult:
    sweep_id: str
    created: bool
    """False: this exact sweep was already queued (nothing new was written)"""
    jobs: tuple[Job, ...]


def submit_sweep(plan: SweepPlan, *, store: JobStore | None = None, preflight: bool = True) -> SubmitResult:
    """Queue a planned sweep in one transaction (idempotent: the sweep id is the spec's hash).

    First the pre-flight checks of this machine (toolkit.study.preflight: weights loadable, dataset splits
    readable, 4-bit runnable): a sweep that would only fail in its jobs is refused with one InputError line.
    """
    from toolkit.study import preflight as checks

    store = store or JobStore()
    spec = plan.spec
    if preflight:
        checks.check(spec)
    new = [NewJob(id=j.id, name=j.name, steps=j.steps, output_dir=j.output_dir, gpus=plan.spec.gpus_per_job,
                  max_attempts=plan.spec.max_attempts, executor=spec.executor,
                  resources=spec.slurm.to_dict() if spec.executor == "slurm" else {}, settings=j.settings,
                  meta={"ratio": j.ratio, "seed": j.seed, "budget": str(j.budget), "ranks": list(j.ranks),
                        "params": j.params, "budget_error": j.budget_error, "model": plan.spec.model,
                        "dataset": plan.spec.dataset, "lora_sha256": j.lora_sha256, "kind": j.kind, **j.meta})
           for j in plan.jobs]
    created, jobs = store.submit_sweep(plan.sweep_id, plan.spec.normalised(), new)
    return SubmitResult(sweep_id=plan.sweep_id, created=created, jobs=tuple(jobs))
