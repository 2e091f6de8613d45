"""A sweep's own options as settings groups: its axes, its evaluation, its queueing and where its jobs run.

    add_flags(parser, SweepSettings)                     # `sweep`'s own flags (toolkit/cli/flags.py)
    options = values_from_args(SweepSettings, args)      # {field: text} of those given
    spec = SweepSpec.from_options(options, train=...)    # toolkit/study/sweep.py: the sweep they define
    settings_field(SweepSettings, "seeds").upper         # 100: the bound `sweep`, SweepSpec and the form share

A study is the training settings every job shares (`TrainSettings`, toolkit/training/settings.py) plus these:
each option's name, flag, doc string, default, bounds and choices are defined here once, and `sweep --help`,
`SweepSpec.build` (its defaults), `SweepSpec`'s checks (its bounds) and the app's launch form read them from here.
The values are still checked where they were, by `SweepSpec` and `SweepSpec.build` with the messages their
callers know (a sweep id hashes `SweepSpec`, the record a sweep stores; these options are how it is asked for).
Several take text lists (`--ratios 1:1:1,1:4:1`, `--budget-rank 8,16`, `--seed-list 0,1,2`), which the spec
parses. The Slurm resources' defaults and bounds are `toolkit.queue.slurm.cluster.SlurmResources`' own.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from toolkit.fields import Settings, setting
from toolkit.queue.store import DEFAULT_MAX_ATTEMPTS, EXECUTORS
from toolkit.study.packrun import MAX_ARMS
from toolkit.study.search import Search
from toolkit.training.settings import EvalSettings


class SweepAxes(Settings):
    """What `train` takes once per job, a sweep takes as lists: ratios (or a design), seeds, budgets; and how a
    designed study searches them."""

    section: ClassVar[str] = "the sweep's axes (what `train` takes once per job)"
    ratios: str | None = setting(None, aliases=("--ratio",), metavar="V:P:L[,V:P:L...]")
    """comma-separated V:P:L ratios, e.g. 1:1:1,1:4:1,2:4:1 (or --design, or both)"""
    design: str | None = setting(None, metavar="DESIGN")
    """a study design over the simplex: simplex-lattice:M or simplex-centroid, optionally ?floor=F (every weight >= F); always includes 1:1:1"""
    search: Literal["halving"] | None = setting(None, metavar="halving")
    """successive halving: train every arm to the first rung, keep the better 1/eta (noise-aware), continue the survivors from their checkpoints"""
    rungs: str | None = setting(None, metavar="S1,S2,...")
    """steps of each rung, the last = --max-steps (default: max-steps / eta^2, / eta, max-steps)"""
    eta: float = setting(Search.eta, gt=1, metavar="ETA")
    """keep about 1/ETA of the arms per rung"""
    report_split: str | None = setting(None, metavar="SPLIT")
    """after the search, the confirmation (recommended ratio and 1:1:1, fresh seeds) is evaluated on this split (default test)"""
    confirm: bool = setting(True, flag="--no-confirm")
    """after the search, queue the confirmation (the recommended ratio and 1:1:1 on fresh seeds); --no-confirm: do not"""
    controls: bool = setting(False)
    """with the confirmation, also queue the learning-rate control (1:1:1 with the projector's lr scaled as the winner scales its rank) and the alpha-rule axis (rsLoRA, fixed alpha)"""
    seeds: int = setting(1, ge=1, le=100, metavar="N")
    """number of seeds: 0..N-1"""
    seed_list: str | None = setting(None, aliases=("--seed",), metavar="S[,S...]")
    """explicit seeds, e.g. 0,1,2"""
    budget_rank: str | None = setting(None, exclusive="budget", metavar="R[,R...]")
    """uniform rank equivalent (several: 8,16)"""
    budget_params: str | None = setting(None, exclusive="budget", metavar="N[,N...]")
    """trainable parameters"""
    budget_percent: str | None = setting(None, exclusive="budget", metavar="P[,P...]")
    """percent of the base model"""
    output: str | None = setting(None, metavar="DIR")
    """folder of the sweep's adapters (default: the adapter store)"""
    name: str | None = setting(None)
    """job and adapter names start with NAME instead of the model's name"""


class SweepEvaluation(Settings):
    """The evaluation step after each job's training, and the reference row."""

    section: ClassVar[str] = "evaluation (a step after training)"
    eval_split: str = setting(EvalSettings.model_fields["split"].default)
    """split to evaluate on"""
    eval_limit: int | None = setting(None, ge=1, le=1_000_000, metavar="N")
    """evaluate on at most N questions"""
    evaluate: bool = setting(True, flag="--no-eval")
    """evaluate every adapter after its training; --no-eval: train only"""
    retrieval: int | None = setting(None, ge=2, le=5000, metavar="N")
    """also measure image-text retrieval (Recall@1/5/10 both ways) on N image-caption pairs, for every adapter and the base model"""
    retrieval_dataset: str | None = setting(None, metavar="D")
    """image-caption data of --retrieval (default: synthetic:shapes, captions written from the scenes)"""
    reference: bool = setting(True, flag="--no-reference")
    """also queue the base model's evaluation on the same questions (the comparison's reference row); --no-reference: do not"""


class SweepQueueing(Settings):
    """How the jobs are queued: packed or one per arm, their GPUs, their retries."""

    section: ClassVar[str] = "queueing"
    pack: bool = setting(False)
    """one job per pack of arms of one budget instead of one per arm: the pack trains its arms in one process on one copy of the base (fused where it can) and evaluates each there (`python -m toolkit pack`)"""
    pack_size: int | None = setting(None, ge=1, le=MAX_ARMS, metavar="N")
    """at most N arms per pack (default: every arm of a budget, up to 64); a pack whose forward runs out of GPU memory splits it in two and goes on, but every arm's LoRA and optimizer state stays on the device: on a GPU, size packs to fit"""
    gpus_per_job: int | None = setting(None, ge=0)
    """default: 1 when the machine has GPUs, else 0 (CPU); more than 1 trains with DDP (torchrun), the global batch kept"""
    max_attempts: int = setting(DEFAULT_MAX_ATTEMPTS, ge=1, le=100)
    """runs allowed when a worker is lost"""


class SweepExecutor(Settings):
    """Where the jobs run: the worker's own processes, or a Slurm cluster with per-job resources."""

    section: ClassVar[str] = "executor (where the jobs run)"
    executor: Literal[EXECUTORS] = setting("local")
    """local: the worker's processes; slurm: sbatch to a Slurm cluster"""
    partition: str | None = setting(None)
    """Slurm partition (default: the cluster's default)"""
    nodes: int | None = setting(None)
    """Slurm nodes per job (default 1; more: DDP across nodes)"""
    gpus_per_node: int | None = setting(None)
    """GPUs per node (default: 1 when the partition has GPUs, else 0); >1 trains with DDP"""
    cpus_per_gpu: int | None = setting(None)
    """CPUs per GPU (per node for CPU jobs)"""
    mem: str | None = setting(None)
    """memory per node, e.g. 64G"""
    time: str | None = setting(None)
    """time limit: minutes, H:MM:SS or D-HH:MM:SS (default: the partition's)"""
    sbatch_extra: str | None = setting(None, metavar="OPTIONS")
    """more sbatch options, e.g. --sbatch-extra="--qos=high --account=lab" (with =)"""


class SweepSettings(SweepAxes, SweepEvaluation, SweepQueueing, SweepExecutor):
    """A sweep's own options (`python -m toolkit sweep` adds every `train` option for what its jobs share)."""


SLURM_OPTIONS = tuple(name for name in SweepExecutor.model_fields if name != "executor")
"""the options that only the slurm executor takes (each job's resources)"""
