"""The settings of one training run (`TrainSettings`) and of one evaluation (`EvalSettings`): one dataclass each.

    >>> s = TrainSettings(model="demo", dataset="synthetic:shapes", ratio="1:4:1", budget_rank=8, max_steps=200)
    >>> s.spec.ratio.as_tuple(), s.learning_rate
    ((1.0, 4.0, 1.0), 0.0002)
    >>> TrainSettings.from_dict(s.to_dict()) == s          # what a queued job stores and its train step reads
    True
    >>> TrainSettings(model="demo", dataset="synthetic:shapes", ratio="1:1:1", budget_rank=8, lr=1.5)
    Traceback (most recent call last):
    toolkit.errors.InputError: lr: must be a learning rate in (0, 1), got 1.5

Each field carries its type, its default (the one source of defaults), a one-line doc string under it (the
`--help` text and the form's help) and, in `metadata`, how its flag reads (toolkit/cli/flags.py derives the
flags of `train`, `sweep` and `evaluate` from these fields, and the jobs page reads defaults from them).
`__post_init__` converts text (flags, form fields, JSON) to the field's type and refuses bad values with one
line naming the flag: the CLI, a sweep, the app and a queued job's train step validate identically.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import json
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from toolkit.calculator.architectures import COMPONENTS, ComponentPatterns
from toolkit.calculator.spec import (
    ALPHA_RULES,
    BUDGET_KINDS,
    MAX_ALPHA,
    MAX_PARAMS,
    MAX_RANK,
    MODES,
    ROUNDINGS,
    AllocationSpec,
    AlphaRule,
    Budget,
    Ratio,
    Targets,
    parse_components,
    parse_count,
    parse_int,
    parse_number,
    parse_ranks,
)
from toolkit.errors import InputError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
QUANTIZE = ("4bit",)
DEFAULT_LR = 2e-4
"""learning rate when neither --lr nor the model's defaults give one (the usual LoRA rate for 7B VLMs)"""
MODEL_DEFAULTS = {name: {"lr": 2e-3, "max_steps": 300, "batch_size": 16} for name in ("demo", "demo-projector")}
"""per-model training defaults, the one source of the CLI's and the app's: the tiny demo model (and its planted
variant) learns the synthetic task in ~300 steps at 2e-3 on a CPU; 5e-3 made it forget the colour and shape
questions it was pretrained on (bench/RESULTS.md, controls), 2e-4 barely moves it"""


def model_defaults(model: str) -> dict:
    """{"lr", "max_steps", "batch_size"} a run of `model` starts from unless told otherwise.

        >>> model_defaults("demo")["lr"], model_defaults("llava-1.5-7b")["lr"]
        (0.002, 0.0002)
    """
    return {"lr": DEFAULT_LR, "max_steps": None, "batch_size": 8, **MODEL_DEFAULTS.get(str(model).strip(), {})}


def flag_name(f) -> str:
    """The command-line flag of a field: `--lr-vision` for `lr_vision` unless its metadata names another."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _label(f) -> str:
    return flag_name(f).removeprefix("--no-").removeprefix("--")


def _opt(default: Any = MISSING, *, factory: Any = MISSING, group: str, **meta) -> Any:
    """A settings field: `group` (its --help section); optionally `flag`, `choices` (+ `refusal` text), `check`
    (predicate, allowed text), `parse` / `text` (text <-> value of non-plain types), `exclusive` (a group of
    fields of which at most one is set), `metavar`."""
    return field(default=default, default_factory=factory, metadata={"group": group, **meta})


def _targets_text(t: Targets) -> str:
    return ",".join(f"{c}={t.kind(c)}" for c in COMPONENTS if t.kind(c) != "all")


def _columns_text(columns: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in columns.items())


def _columns(value) -> dict[str, str]:
    from toolkit.data.sources import parse_columns

    return parse_columns(value if isinstance(value, str) else _columns_text(dict(value)))


def _audit(value) -> tuple[int, int, int]:
    return parse_ranks(value if isinstance(value, str) else ":".join(str(v) for v in value), "audit")


def _targets(value) -> Targets:
    return value if isinstance(value, Targets) else Targets.parse(value)


def _patterns(value: str) -> str:
    ComponentPatterns.parse(value)  # refuses bad regexes with the field's name
    return value


POSITIVE = (lambda v: v >= 1, "a whole number >= 1")
ABOVE_ZERO = (lambda v: v > 0, "a number > 0")
UNIT = (lambda v: 0 <= v < 1, "in [0, 1)")
LEARNING_RATE = (lambda v: 0 < v < 1, "a learning rate in (0, 1)")
NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
SEED = (lambda v: 0 <= v < 2**32, "a whole number in [0, 2^32)")  # numpy's seeds are 32-bit; torch's 64-bit
STEPS = (lambda v: 1 <= v <= 10**8, "a whole number in [1, 10^8]")  # bounded work: absurd sizes are refused
SIZE = (lambda v: 1 <= v <= 2**16, "a whole number in [1, 65536]")
MODEL, DATA, TRAINING, OUTPUT = "model and allocation", "data", "training", "output"
EVALUATED, GENERATION = "what to evaluate", "generation"
GROUP_ORDER = (MODEL, EVALUATED, DATA, TRAINING, GENERATION, OUTPUT)


@functools.cache
def field_docs(cls) -> dict[str, str]:
    """{field name: the doc string under it} of a settings class and its bases (what --help prints)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        body = ast.parse(inspect.getsource(klass)).body[0].body
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                docs[node.target.id] = after.value.value.strip()
    return docs


def setting_choices(cls, name: str) -> list[str]:
    """The allowed values of a settings field (for a form's radio or select box)."""
    return list(next(f for f in fields(cls) if f.name == name).metadata["choices"])


def _kind(f) -> str:
    """The field's type without `| None`: 'int', 'float', 'str', 'bool', or a class name."""
    return str(f.type).replace(" | None", "").strip()


def _convert(f, value):
    """Text (or JSON) -> the field's type; None for empty optional input; InputError naming the flag."""
    name, kind, optional = _label(f), _kind(f), "None" in str(f.type)
    if isinstance(value, str):
        value = value.strip()
    if value is None or value == "" and (kind != "str" or optional):
        if optional:
            return None
        value = f.default if f.default is not MISSING else f.default_factory()  # None or empty: the default
        if value is None or value == "":
            return value
    if "parse" in f.metadata:
        return f.metadata["parse"](value)
    if kind == "bool":
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise InputError(f"{name}: must be true or false, got {value!r}")
    elif kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str):
            value = parse_int(value, name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise InputError(f"{name}: '{value}' is not a whole number")
    elif kind == "float":
        if isinstance(value, str):
            value = parse_number(value, name, f.metadata.get("check", (None, "a number"))[1])
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise InputError(f"{name}: '{value}' is not a finite number")
        value = float(value)
    elif kind == "str" and not isinstance(value, str):
        raise InputError(f"{name}: must be text, got {value!r}")
    return value


def normalise(obj) -> None:
    """Convert and check every field of a settings dataclass in place (its `__post_init__` calls this)."""
    for f in fields(obj):
        value = _convert(f, getattr(obj, f.name))
        choices = f.metadata.get("choices")
        if value is not None and choices and value not in choices:
            refusal = f.metadata.get("refusal") or f"is not one of {', '.join(choices)}"
            raise InputError(f"{_label(f)}: '{value}' {refusal}")
        check = f.metadata.get("check")
        if value is not None and check and not check[0](value):
            raise InputError(f"{_label(f)}: must be {check[1]}, got {value:g}" if isinstance(value, float)
                             else f"{_label(f)}: must be {check[1]}, got {value}")
        object.__setattr__(obj, f.name, value)
    for group in {f.metadata.get("exclusive") for f in fields(obj)} - {None}:
        given = [f for f in fields(obj) if f.metadata.get("exclusive") == group and getattr(obj, f.name) is not None]
        if len(given) > 1:
            raise InputError(f"{_label(given[0])}: give either {flag_name(given[0])} or {flag_name(given[1])}, not both")


def _plain(value):
    """A field value as JSON: Targets as their flag text, tuples as lists."""
    return _targets_text(value) if isinstance(value, Targets) else list(value) if isinstance(value, tuple) else value


class _Settings:
    """JSON round trip shared by the settings dataclasses."""

    def to_dict(self) -> dict:
        """Plain JSON values, flag text for the non-plain ones (targets, columns): `from_dict` reads it back."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict):
        if not isinstance(data, dict):
            raise InputError(f"settings: expected a JSON object of {cls.__name__} fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"settings: unknown field '{unknown[0]}' (fields: {', '.join(sorted(known))})")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str):
        """An inline JSON object, or the path of a file holding one."""
        from pathlib import Path

        text = str(text).strip()
        if not text.startswith("{"):
            try:
                text = Path(text).expanduser().read_text()
            except OSError as exc:
                raise InputError(f"settings-json: cannot read '{text}' ({exc.strerror or exc})") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError(f"settings-json: not valid JSON ({exc})") from None
        return cls.from_dict(data)

    def changed(self) -> dict:
        """The fields that differ from their defaults (what a sweep's id hashes)."""
        defaults = type(self).defaults()
        return {k: v for k, v in self.to_dict().items() if k not in defaults or defaults[k] != v}

    @classmethod
    def defaults(cls) -> dict:
        """{field: default} in `to_dict` form, for fields that have one."""
        return {f.name: _plain(f.default if f.default is not MISSING else f.default_factory()) for f in fields(cls)
                if f.default is not MISSING or f.default_factory is not MISSING}


@dataclass(frozen=True, kw_only=True)
class DataSettings(_Settings):
    """Which VQA records: the fields `train` and `evaluate` share."""

    dataset: str = _opt("", group=DATA, metavar="D")
    """synthetic:shapes[?n=2000&seed=0], a JSONL file, a dataset folder (<split>.jsonl), or a Hub dataset id"""
    split: str = _opt("train", group=DATA)
    """dataset split"""
    limit: int | None = _opt(None, group=DATA, check=POSITIVE, metavar="N")
    """deterministic subset of N records"""
    columns: dict[str, str] = _opt(factory=dict, group=DATA, parse=_columns, text=_columns_text, metavar="FIELD=COL,...")
    """column mapping FIELD=COLUMN,... (fields: question_id, image, question, answers, answer_type, question_type)"""
    image_dir: str | None = _opt(None, group=DATA, metavar="DIR")
    """folder that relative image paths are resolved against"""
    images_anywhere: bool = _opt(False, group=DATA)
    """follow image paths that leave the dataset folder (../, absolute paths, symlinks); refused otherwise"""
    sample_seed: int = _opt(0, group=DATA, check=SEED)
    """seed that picks the --limit subset (independent of --seed, so every run sees the same records)"""
    holdout: float | None = _opt(None, group=DATA, check=(lambda v: 0 < v < 1, "a share in (0, 1)"), metavar="F")
    """hold out this share of the split's images: train uses the rest, evaluate the held-out part (no shared image)"""


@dataclass(frozen=True, kw_only=True)
class TrainSettings(DataSettings):
    """One training run: the model, one allocation, the data and the hyper-parameters (`python -m toolkit train`)."""

    model: str = _opt("", group=MODEL, metavar="M")
    """preset name, local folder with config.json, or Hub id"""
    revision: str | None = _opt(None, group=MODEL)
    """Hub revision when --model is a Hub id"""
    ratio: str | None = _opt(None, group=MODEL, parse=lambda t: str(Ratio.parse(str(t))), metavar="V:P:L")
    """vision:projector:language weights, e.g. 1:4:1 (0 leaves a component out)"""
    audit: tuple[int, int, int] | None = _opt(None, group=MODEL, parse=_audit, metavar="V:P:L")
    """train these explicit ranks instead of a solved allocation, e.g. 4:16:4"""
    mode: str = _opt("rank", group=MODEL, choices=MODES)
    """rank (ranks follow the ratio) or share (budget shares do)"""
    budget_rank: float | None = _opt(None, group=MODEL, exclusive="budget", metavar="R",
                                     check=(lambda v: 0 < v <= MAX_RANK, f"a rank in (0, {MAX_RANK}]"))
    """budget = uniform rank R on every targeted module"""
    budget_params: int | None = _opt(None, group=MODEL, exclusive="budget", metavar="N",
                                     check=(lambda v: 1 <= v <= MAX_PARAMS, f"a whole number in [1, {MAX_PARAMS:.0e}]"),
                                     parse=lambda v: int(parse_count(v, "budget-params", "a whole number such as 20000000 or 20M")))
    """budget in trainable parameters (20000000, 20,000,000 or 20M)"""
    budget_percent: float | None = _opt(None, group=MODEL, exclusive="budget", metavar="P",
                                        check=(lambda v: 0 < v <= 100, "a percentage in (0, 100]"))
    """budget as a percentage of the base model's parameters"""
    targets: Targets = _opt(factory=Targets, group=MODEL, parse=_targets, text=_targets_text)
    """module kinds per component, e.g. language=attention,vision=mlp (kinds: all, attention, mlp)"""
    alpha_rule: str = _opt("scaled", group=MODEL, choices=ALPHA_RULES)
    """scaled (alpha = k*r), fixed, or rslora"""
    alpha_value: float = _opt(2.0, group=MODEL, flag="--alpha", check=(lambda v: 0 < v <= MAX_ALPHA, "in (0, 1e6]"))
    """k for scaled, alpha itself for fixed/rslora"""
    rounding: str = _opt("mixed", group=MODEL, choices=ROUNDINGS)
    """mixed (per-module floor/ceil ranks: every ratio within 0.5 % of the budget) or uniform (one rank per component)"""
    full_finetune: tuple[str, ...] = _opt((), group=MODEL, metavar="COMPONENTS", text=",".join,
                                          parse=lambda v: parse_components(v, "full-finetune"))
    """train these components fully (PEFT modules_to_save) at their true cost from the same budget, e.g. projector"""
    allow_budget_error: bool = _opt(False, group=MODEL)
    """accept an allocation more than 1 % off the budget (a sweep refuses it otherwise); recorded in cmba.json"""
    patterns: str | None = _opt(None, group=MODEL, parse=_patterns, metavar="'vision=RE;projector=RE;language=RE'")
    """component regexes for families the registry does not know"""
    dataset_config: str | None = _opt(None, group=DATA)
    """dataset configuration (subset) name for Hub datasets"""
    dataset_revision: str | None = _opt(None, group=DATA)
    """Hub dataset revision"""
    seed: int = _opt(0, group=TRAINING, check=SEED)
    """training seed: initialisation, dropout, data order"""
    max_steps: int | None = _opt(None, group=TRAINING, exclusive="length", check=STEPS, metavar="N")
    """optimizer steps (default: 300 for the demo models, else one epoch; see model_defaults)"""
    epochs: float | None = _opt(None, group=TRAINING, exclusive="length",
                                 check=(lambda v: 0 < v <= 10_000, "a number of epochs in (0, 10000]"))
    """epochs instead of --max-steps"""
    batch_size: int | None = _opt(None, group=TRAINING, check=SIZE, metavar="N")
    """per-step batch (default: 16 for the demo models, else 8; see model_defaults)"""
    grad_accum: int = _opt(1, group=TRAINING, check=SIZE)
    """gradient accumulation steps"""
    lr: float | None = _opt(None, group=TRAINING, check=LEARNING_RATE)
    """learning rate (default: 2e-3 for the demo models, else 2e-4; see model_defaults)"""
    lr_vision: float | None = _opt(None, group=TRAINING, check=LEARNING_RATE)
    """learning rate of the vision LoRA (default --lr)"""
    lr_projector: float | None = _opt(None, group=TRAINING, check=LEARNING_RATE)
    """learning rate of the projector LoRA (default --lr)"""
    lr_language: float | None = _opt(None, group=TRAINING, check=LEARNING_RATE)
    """learning rate of the language LoRA (default --lr)"""
    warmup_ratio: float = _opt(0.03, group=TRAINING, check=UNIT)
    """linear warm-up share of the steps, then cosine"""
    weight_decay: float = _opt(0.0, group=TRAINING, check=(lambda v: 0 <= v <= 1, "in [0, 1]"))
    """AdamW weight decay"""
    lora_dropout: float = _opt(0.05, group=TRAINING, check=UNIT)
    """LoRA dropout"""
    max_grad_norm: float = _opt(1.0, group=TRAINING, check=NON_NEGATIVE)
    """gradient clipping norm (0 = no clipping)"""
    precision: str = _opt("auto", group=TRAINING, choices=PRECISIONS)
    """auto (bf16 on a GPU that has it, else fp32), fp32, bf16, fp16"""
    gradient_checkpointing: bool = _opt(False, group=TRAINING)
    """trade compute for activation memory"""
    group_by_length: bool = _opt(True, group=TRAINING, flag="--no-group-by-length")
    """length-grouped batches (similar question lengths per step: less padding); the order stays a function of the seed"""
    quantize: str | None = _opt(None, group=TRAINING, choices=QUANTIZE, refusal="is not supported (allowed: 4bit)")
    """4bit: QLoRA (bitsandbytes nf4 base; projector and LoRA kept in higher precision)"""
    checkpoint_every: int = _opt(50, group=TRAINING, check=POSITIVE, metavar="N")
    """atomic checkpoint every N steps"""
    output: str | None = _opt(None, group=OUTPUT, metavar="DIR")
    """adapter folder (default adapters/<name>)"""
    name: str | None = _opt(None, group=OUTPUT)
    """adapter name (default <model>-r<ranks>-b<budget>-s<seed>)"""
    resume: bool = _opt(False, group=OUTPUT)
    """continue from the last complete checkpoint (fresh if none)"""
    overwrite: bool = _opt(False, group=OUTPUT)
    """delete what the output folder holds and start over"""
    keep_checkpoints: bool = _opt(False, group=OUTPUT)
    """keep checkpoints/ after training"""
    progress: bool = _opt(True, group=OUTPUT, flag="--no-progress")
    """log lines instead of a progress bar"""
    expect_lora_sha256: str | None = _opt(None, group=OUTPUT, metavar="HASH")
    """refuse to train unless the allocation's LoraConfig hashes to this (sweeps set it to the planned one)"""

    def __post_init__(self):
        normalise(self)
        if not self.model:
            raise InputError("model: required: a preset name, a local folder with config.json, or a Hub id")
        # the model's defaults are resolved here, once: a TrainSettings always holds the values a run uses
        model_default = model_defaults(self.model)
        for key in ("lr", "batch_size"):
            if getattr(self, key) is None:
                object.__setattr__(self, key, model_default[key])
        if self.max_steps is None and self.epochs is None:
            object.__setattr__(self, "max_steps", model_default["max_steps"])
        if not self.dataset:
            raise InputError("dataset: required (synthetic:shapes, a JSONL file, a dataset folder, or a Hub dataset id)")
        if self.audit is None:
            if self.ratio is None:
                raise InputError("ratio: required, e.g. --ratio 1:4:1 (or use --audit V:P:L for explicit ranks)")
            if self.budget is None:
                raise InputError("budget: give one of --budget-rank R, --budget-params N, --budget-percent P")
        if self.name is not None and ("/" in self.name or self.name.startswith(".")):
            raise InputError(f"name: '{self.name}' must be a plain folder name (no '/', not starting with '.')")

    def changed(self) -> dict:
        """As `_Settings.changed`, with the values left out that are the model's defaults."""
        out = super().changed()
        for key, value in model_defaults(self.model).items():
            if key in out and out[key] == value:
                out.pop(key)
        return out

    # ------------------------------------------------------------------ what the engine reads
    @property
    def budget(self) -> Budget | None:
        """The one budget flag given, as a Budget (None in audit mode without one)."""
        for kind in BUDGET_KINDS:
            value = getattr(self, f"budget_{kind}")
            if value is not None:
                return Budget(kind, value)
        return None

    @property
    def alpha(self) -> AlphaRule:
        return AlphaRule(self.alpha_rule, self.alpha_value)

    @property
    def spec(self) -> AllocationSpec | None:
        """The solver's input (None in audit mode)."""
        if self.audit is not None:
            return None
        return AllocationSpec(ratio=Ratio.parse(self.ratio), budget=self.budget, mode=self.mode, targets=self.targets,
                              alpha=self.alpha, rounding=self.rounding, full_finetune=self.full_finetune)

    @property
    def audit_ranks(self) -> tuple[int, int, int] | None:
        return self.audit

    @property
    def audit_budget(self) -> Budget | None:
        return self.budget

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

    def load_structure(self):
        """The model's structure (meta device) with these patterns and revision."""
        from toolkit.calculator.structure import load_structure

        patterns = ComponentPatterns.parse(self.patterns) if self.patterns else None
        return load_structure(self.model, patterns=patterns, revision=self.revision)

    def allocation(self, structure=None):
        """The allocation these settings train (solved, or audited with --audit)."""
        from toolkit.calculator.allocation import allocate, audit

        structure = structure or self.load_structure()
        if self.audit is not None:
            return audit(structure, self.audit, budget=self.budget, targets=self.targets, alpha=self.alpha)
        return allocate(structure, self.spec)


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


@dataclass(frozen=True, kw_only=True)
class EvalSettings(DataSettings):
    """One evaluation: an adapter (or the base model alone) on a split (`python -m toolkit evaluate`)."""

    adapter: str | None = _opt(None, group=EVALUATED, metavar="DIR")
    """adapter folder (with cmba.json)"""
    base: str | None = _opt(None, group=EVALUATED, metavar="MODEL")
    """evaluate the base model alone (the reference row)"""
    revision: str | None = _opt(None, group=EVALUATED)
    """Hub revision of --base"""
    quantize: str | None = _opt(None, group=EVALUATED, choices=QUANTIZE, refusal="is not supported (allowed: 4bit)")
    """4bit: evaluate --base under the quantization its adapters were trained with (an adapter's is read from it)"""
    split: str = _opt("validation", group=DATA)
    """dataset split"""
    batch_size: int = _opt(32, group=GENERATION, check=POSITIVE)
    """questions per generate call"""
    max_new_tokens: int = _opt(10, group=GENERATION, check=(lambda v: 1 <= v <= 512, "a whole number in [1, 512]"))
    """answer length limit in tokens"""
    allow_contaminated: bool = _opt(False, group=EVALUATED)
    """evaluate even where questions or images overlap the adapter's training data (the result is marked contaminated)"""

    def __post_init__(self):
        normalise(self)
        if bool(self.adapter) == bool(self.base):
            raise InputError("adapter: give --adapter DIR (a trained adapter) or --base MODEL (the base model alone)")
        if not self.dataset:
            raise InputError("dataset: required (synthetic:shapes, a JSONL file, a dataset folder, or a Hub dataset id)")
