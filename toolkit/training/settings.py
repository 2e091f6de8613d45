"""The settings tree of a training run (`TrainSettings`) and of an evaluation (`EvalSettings`), built from groups.

    >>> s = TrainSettings(model="demo", dataset="synthetic:shapes", ratio="1:4:1", budget_rank=8, max_steps=200)
    >>> s.spec.ratio.as_tuple(), s.learning_rate          # the demo model's default lr (model_defaults)
    ((1.0, 4.0, 1.0), 0.002)
    >>> TrainSettings.from_dict(s.to_dict()) == s          # what a queued job stores and its train step reads
    True
    >>> TrainSettings(model="demo", dataset="synthetic:shapes", ratio="1:1:1", budget_rank=8, lr=1.5)
    Traceback (most recent call last):
    toolkit.errors.InputError: lr: must be a learning rate in (0, 1), got 1.5

The tree: `TrainSettings` = `ModelSettings` + `AllocationSettings` (toolkit/calculator/settings.py, also what
`allocate` takes) + `DataSettings` + `HubDataSettings` + `OptimSettings` + `OutputSettings`; `EvalSettings` =
`EvaluatedSettings` + `DataSettings` + `GenerationSettings`; a study (toolkit/study/sweep.py `SweepSpec`) is
the training settings every job shares plus its axes (ratios, budgets, seeds). Each field is defined once, with
its type, default, bounds or choices and the doc string under it; `allocate`, `train`, `sweep` and `evaluate`
derive their flags from the fields (toolkit/cli/flags.py) and the app's forms their widgets (app_pages/
settings_ui.py). Text from flags, forms and JSON is converted and checked on construction; a bad value is one
line naming the flag (`lr: must be a learning rate in (0, 1), got 1.5`), the same from every entry point.

The machinery is pydantic v2 (toolkit/fields.py says why: conversion, bounds, choices, JSON and field docs are
its own, our code is the one-line error and the flag/form derivation). The model's training defaults (lr, batch
size, steps: `model_defaults`) resolve once, in `TrainSettings.resolve`, so a settings object always holds the
values a run uses; they do not count as changes (`changed`, which a sweep's id hashes). A settings object
computes its allocation once (`allocation()`), and the CLI, the allocation check and the engine share it.
"""

from __future__ import annotations

import hashlib
import json
from typing import ClassVar, Literal

from pydantic import field_validator

from toolkit.calculator.architectures import COMPONENTS
from toolkit.calculator.settings import AllocationSettings, ModelSettings
from toolkit.errors import InputError
from toolkit.fields import Settings, setting

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
QUANTIZE = ("4bit",)
DEFAULT_LR = 2e-4
"""learning rate when neither --lr nor the model's defaults give one (the usual LoRA rate for 7B VLMs)"""
DEFAULT_BATCH_SIZE = 8
"""per-step batch when neither --batch-size nor the model's defaults give one"""
MODEL_DEFAULTS = {name: {"lr": 2e-3, "max_steps": 300, "batch_size": 16} for name in ("demo", "demo-projector")}
"""per-model training defaults, the one source of the CLI's and the app's: the tiny demo model (and its planted
variant) learns the synthetic task in ~300 steps at 2e-3 on a CPU; 5e-3 made it forget the colour and shape
questions it was pretrained on (bench/RESULTS.md, controls), 2e-4 barely moves it"""
MAX_STEPS = 10**8
"""bounded work: absurd sizes are refused"""
MAX_BATCH = 2**16


def model_defaults(model: str) -> dict:
    """{"lr", "max_steps", "batch_size"} a run of `model` starts from unless told otherwise.

        >>> model_defaults("demo")["lr"], model_defaults("llava-1.5-7b")["lr"]
        (0.002, 0.0002)
    """
    return {"lr": DEFAULT_LR, "max_steps": None, "batch_size": DEFAULT_BATCH_SIZE,
            **MODEL_DEFAULTS.get(str(model).strip(), {})}


DATASET_REQUIRED = "dataset: required (synthetic:shapes, a JSONL file, a dataset folder, or a Hub dataset id)"
LEARNING_RATE = dict(gt=0, lt=1, allowed="a learning rate in (0, 1)")
SEED = dict(ge=0, lt=2**32, allowed="a whole number in [0, 2^32)")  # numpy's seeds are 32-bit; torch's 64-bit
UNIT = dict(ge=0, lt=1, allowed="in [0, 1)")


class DataSettings(Settings):
    """Which VQA records: the fields `train` and `evaluate` share."""

    section: ClassVar[str] = "data"
    dataset: str = setting("", metavar="D")
    """synthetic:shapes[?n=2000&seed=0], a JSONL file, a dataset folder (<split>.jsonl), or a Hub dataset id"""
    split: str = setting("train")
    """dataset split"""
    limit: int | None = setting(None, ge=1, metavar="N")
    """deterministic subset of N records"""
    columns: dict[str, str] = setting(factory=dict, metavar="FIELD=COL,...")
    """column mapping FIELD=COLUMN,... (fields: question_id, image, question, answers, answer_type, question_type)"""
    image_dir: str | None = setting(None, metavar="DIR")
    """folder that relative image paths are resolved against"""
    images_anywhere: bool = setting(False)
    """follow image paths that leave the dataset folder (../, absolute paths, symlinks); refused otherwise"""
    sample_seed: int = setting(0, **SEED)
    """seed that picks the --limit subset (independent of --seed, so every run sees the same records)"""
    holdout: float | None = setting(None, gt=0, lt=1, allowed="a share in (0, 1)", metavar="F")
    """hold out this share of the split's images: train uses the rest, evaluate the held-out part (no shared image)"""

    @field_validator("columns", mode="before")
    @classmethod
    def _columns(cls, value):
        from toolkit.data.sources import parse_columns

        if isinstance(value, dict):
            value = ",".join(f"{k}={v}" for k, v in value.items())
        return parse_columns(value)

    def check(self) -> None:
        if not self.dataset:
            raise InputError(DATASET_REQUIRED)


class HubDataSettings(Settings):
    """Which configuration and revision of a Hub dataset a run trains on."""

    section: ClassVar[str] = "data"
    dataset_config: str | None = setting(None)
    """dataset configuration (subset) name for Hub datasets"""
    dataset_revision: str | None = setting(None)
    """Hub dataset revision"""


class OptimSettings(Settings):
    """How one allocation is trained: seed, length, batch, learning rates, schedule, precision."""

    section: ClassVar[str] = "training"
    seed: int = setting(0, **SEED)
    """training seed: initialisation, dropout, data order"""
    max_steps: int | None = setting(None, ge=1, le=MAX_STEPS, exclusive="length", metavar="N",
                                    allowed="a whole number in [1, 10^8]")
    """optimizer steps (default: 300 for the demo models, else one epoch; see model_defaults)"""
    epochs: float | None = setting(None, gt=0, le=10_000, exclusive="length", allowed="a number of epochs in (0, 10000]")
    """epochs instead of --max-steps"""
    batch_size: int | None = setting(None, ge=1, le=MAX_BATCH, metavar="N")
    """per-step batch (default: 16 for the demo models, else 8; see model_defaults)"""
    grad_accum: int = setting(1, ge=1, le=MAX_BATCH)
    """gradient accumulation steps"""
    lr: float | None = setting(None, **LEARNING_RATE)
    """learning rate (default: 2e-3 for the demo models, else 2e-4; see model_defaults)"""
    lr_vision: float | None = setting(None, **LEARNING_RATE)
    """learning rate of the vision LoRA (default --lr)"""
    lr_projector: float | None = setting(None, **LEARNING_RATE)
    """learning rate of the projector LoRA (default --lr)"""
    lr_language: float | None = setting(None, **LEARNING_RATE)
    """learning rate of the language LoRA (default --lr)"""
    warmup_ratio: float = setting(0.03, **UNIT)
    """linear warm-up share of the steps, then cosine"""
    weight_decay: float = setting(0.0, ge=0, le=1, allowed="in [0, 1]")
    """AdamW weight decay"""
    lora_dropout: float = setting(0.05, **UNIT)
    """LoRA dropout"""
    max_grad_norm: float = setting(1.0, ge=0, allowed=">= 0")
    """gradient clipping norm (0 = no clipping)"""
    precision: Literal[PRECISIONS] = setting("auto")
    """auto (bf16 on a GPU that has it, else fp32), fp32, bf16, fp16"""
    gradient_checkpointing: bool = setting(False)
    """trade compute for activation memory"""
    group_by_length: bool = setting(True, flag="--no-group-by-length")
    """length-grouped batches (similar question lengths per step: less padding); the order stays a function of the seed"""
    quantize: Literal[QUANTIZE] | None = setting(None, refusal="is not supported (allowed: 4bit)")
    """4bit: QLoRA (bitsandbytes nf4 base; projector and LoRA kept in higher precision)"""
    checkpoint_every: int = setting(50, ge=1, metavar="N")
    """atomic checkpoint every N steps"""

    @property
    def learning_rate(self) -> float:
        return self.lr

    @property
    def component_lr(self) -> dict[str, float]:
        """{component: learning rate} of the components with their own --lr-<component>."""
        return {c: getattr(self, f"lr_{c}") for c in COMPONENTS if getattr(self, f"lr_{c}") is not None}

    def hyperparameters(self) -> dict:
        """What cmba.json records under "training" (and what a resume must match)."""
        keys = ("seed", "max_steps", "epochs", "batch_size", "grad_accum", "learning_rate", "component_lr",
                "warmup_ratio", "weight_decay", "lora_dropout", "max_grad_norm", "precision", "quantize",
                "gradient_checkpointing", "group_by_length", "checkpoint_every")
        return {k: getattr(self, k) for k in keys}


class OutputSettings(Settings):
    """Where a run writes and how it treats what is there."""

    section: ClassVar[str] = "output"
    output: str | None = setting(None, metavar="DIR")
    """adapter folder (default adapters/<name>)"""
    name: str | None = setting(None)
    """adapter name (default <model>-r<ranks>-b<budget>-s<seed>)"""
    resume: bool = setting(False)
    """continue from the last complete checkpoint (fresh if none)"""
    overwrite: bool = setting(False)
    """delete what the output folder holds and start over"""
    keep_checkpoints: bool = setting(False)
    """keep checkpoints/ after training"""
    progress: bool = setting(True, flag="--no-progress")
    """log lines instead of a progress bar"""
    expect_lora_sha256: str | None = setting(None, metavar="HASH")
    """refuse to train unless the allocation's LoraConfig hashes to this (sweeps set it to the planned one)"""

    def check(self) -> None:
        if self.name is not None and (not self.name.strip() or "/" in self.name or self.name.startswith(".")
                                      or any(ord(c) < 32 for c in self.name)):
            raise InputError(f"name: {self.name!r} must be a plain, non-empty folder name (no '/', no control "
                             "characters, not starting with '.'), or left out for the default")


class TrainSettings(ModelSettings, AllocationSettings, DataSettings, HubDataSettings, OptimSettings, OutputSettings):
    """One training run: the model, one allocation, the data and the hyper-parameters (`python -m toolkit train`)."""

    @classmethod
    def resolve(cls, data: dict) -> dict:
        """The model's defaults (lr, batch size, steps) where not given: resolved here, once."""
        defaults = model_defaults(data.get("model") or "")
        for key in ("lr", "batch_size"):
            if data.get(key) is None:
                data[key] = defaults[key]
        if data.get("max_steps") is None and data.get("epochs") is None:
            data["max_steps"] = defaults["max_steps"]
        return data

    def check(self) -> None:
        ModelSettings.check(self)
        DataSettings.check(self)
        AllocationSettings.check(self)
        OutputSettings.check(self)

    def changed(self) -> dict:
        """As `Settings.changed`, with the values left out that are the model's defaults."""
        out = super().changed()
        for key, value in model_defaults(self.model).items():
            if key in out and out[key] == value:
                out.pop(key)
        return out


def lora_sha256(allocation) -> str:
    """sha256 of the allocation's LoraConfig dict as canonical JSON: what a plan shows is what a job trains."""
    blob = json.dumps(allocation.lora_config_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def check_allocation(settings: TrainSettings, structure=None) -> None:
    """Refuse (InputError, exit 2) when the allocation differs from the one planned (`expect_lora_sha256`)."""
    if settings.expect_lora_sha256 is None:
        return
    got = lora_sha256(settings.allocation(structure))
    if got != settings.expect_lora_sha256:
        raise InputError(f"expect-lora-sha256: the allocation computed now (LoraConfig sha256 {got[:12]}) differs "
                         f"from the planned one ({settings.expect_lora_sha256[:12]}); the model or the toolkit "
                         "changed since the sweep was planned: plan it again")


class EvaluatedSettings(Settings):
    """What an evaluation scores: an adapter, or the base model alone (the reference row)."""

    section: ClassVar[str] = "what to evaluate"
    adapter: str | None = setting(None, metavar="DIR")
    """adapter folder (with cmba.json)"""
    base: str | None = setting(None, metavar="MODEL")
    """evaluate the base model alone (the reference row)"""
    revision: str | None = setting(None)
    """Hub revision of --base"""
    quantize: Literal[QUANTIZE] | None = setting(None, refusal="is not supported (allowed: 4bit)")
    """4bit: evaluate --base under the quantization its adapters were trained with (an adapter's is read from it)"""
    allow_contaminated: bool = setting(False)
    """evaluate even where questions or images overlap the adapter's training data (the result is marked contaminated)"""

    def check(self) -> None:
        if bool(self.adapter) == bool(self.base):
            raise InputError("adapter: give --adapter DIR (a trained adapter) or --base MODEL (the base model alone)")


class GenerationSettings(Settings):
    """How answers are generated."""

    section: ClassVar[str] = "generation"
    batch_size: int = setting(32, ge=1)
    """questions per generate call"""
    max_new_tokens: int = setting(10, ge=1, le=512)
    """answer length limit in tokens"""


class EvalSettings(EvaluatedSettings, DataSettings, GenerationSettings):
    """One evaluation: an adapter (or the base model alone) on a split (`python -m toolkit evaluate`)."""

    section: ClassVar[str] = "data"
    split: str = setting("validation")
    """dataset split"""

    def check(self) -> None:
        EvaluatedSettings.check(self)
        DataSettings.check(self)
