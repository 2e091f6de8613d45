"""The run folder: the one module that knows how an adapter's folder is laid out, read and written.

    adapters/<name>/adapter_model.safetensors, adapter_config.json   PEFT's files (safetensors only)
    adapters/<name>/cmba.json          AdapterDoc: written last and atomically, its presence = complete
    adapters/<name>/run.json           RunInfo of a run in progress (removed when it finishes)
    adapters/<name>/metrics.jsonl      MetricLine per optimizer step, appended as training goes
    adapters/<name>/checkpoints/step-0000050/   complete checkpoints (tensor I/O: toolkit.training.checkpoint)
    adapters/<name>/eval/<tag>/results.json, predictions.jsonl   EvalResult + Prediction lines of one evaluation
    adapters/base--<model>/            a base model's reference evaluations (cmba.json with kind "base")

    >>> doc = read_adapter_doc("adapters/demo-1-4-1-rank8-s0")    # AdapterDoc, or a one-line InputError
    >>> [m.loss for m in read_metrics(folder)]                     # a torn last line is skipped
    >>> [read_evaluation(folder, tag).scores["overall"] for tag in evaluations(folder)]

Every JSON file goes through `write_json` (temp file, fsync, os.replace) / `read_json` (a damaged, missing or
non-object file is a one-line `InputError` naming it). Records are frozen and validated; keys this version does
not know are kept in `extra`, so a round trip loses nothing. Formats: cmba-adapter/1, cmba-eval/1 (current).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from toolkit.errors import InputError

ADAPTER_DOC = "cmba.json"
RUN_INFO = "run.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
CHECKPOINT_STATE = "state.json"
TRAINED_ON = "trained_on.json"
"""the question and image ids a run trained on (toolkit.data.hygiene.TrainedOn), written before cmba.json"""
"""written last into a checkpoint: marks its content complete"""
EVAL = "eval"
RESULTS = "results.json"
PREDICTIONS = "predictions.jsonl"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_FILES = (ADAPTER_WEIGHTS, ADAPTER_CONFIG)
BASE_PREFIX = "base--"
FORMAT = "cmba-adapter/1"
READABLE_FORMATS = ("cmba-adapter/1",)
EVAL_FORMAT = "cmba-eval/1"
KINDS = ("adapter", "base")
_STEP = re.compile(r"^step-(\d{7})$")


# ------------------------------------------------------------------------------------------ plain files


def slug(text: str, *, keep: str = "-_.", limit: int = 80, lower: bool = False, empty: str = "model") -> str:
    """A file-name-safe form of `text`: ASCII letters, digits and `keep` stay, every other run becomes one '-'.

    >>> slug("Qwen/Qwen2-VL 2B")                           # 'Qwen-Qwen2-VL-2B'
    >>> slug("synthetic:shapes?n=500", keep="")            # 'synthetic-shapes-n-500'
    """
    text = text.lower() if lower else text
    kept = "".join(ch if (ch.isascii() and ch.isalnum()) or ch in keep else "-" for ch in text)
    return "-".join(filter(None, kept.split("-"))).strip(".-")[:limit] or empty


def write_json(path: str | Path, data) -> None:
    """Write `data` as JSON atomically: a temporary file next to `path`, fsynced, then renamed over it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when something failed before the rename


def read_json(path: str | Path, *, label: str | None = None) -> dict:
    """The JSON object in `path`; InputError '<label>: ...' (default: the file name) when it is missing, damaged
    or not an object."""
    path, label = Path(path), label or Path(path).name
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{label}: '{path}' not found") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{label}: cannot read '{path}' ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{label}: '{path}' is not a JSON object")
    return data


def _json_lines(path: Path) -> list[dict] | None:
    """The JSON objects of a .jsonl file, None when it does not exist; a torn or foreign line is skipped."""
    try:
        return _objects(path.read_text(encoding="utf-8", errors="replace").split("\n"))  # "\n" only: U+2028 is valid in JSON
    except FileNotFoundError:
        return None


def _objects(lines) -> list[dict]:
    rows = []
    for line in lines:
        with contextlib.suppress(ValueError):  # a line cut by a crash mid-write
            rows.append(json.loads(line))
    return [r for r in rows if isinstance(r, dict)]  # foreign lines too


class _Record:
    """to_dict / from_dict for the frozen records below: known fields, unknown keys kept in `extra`."""

    _optional: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        out = {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.init and f.name != "extra"}
        return {**{k: v for k, v in out.items() if v is not None or k not in self._optional}, **self.extra}

    @classmethod
    def from_dict(cls, doc: dict, *, source: str = ""):
        if not isinstance(doc, dict):
            raise InputError(f"{source or cls.__name__}: not a JSON object")
        names = {f.name for f in fields(cls) if f.init} - {"extra"}
        missing = [f.name for f in fields(cls) if f.name not in doc and MISSING is f.default and MISSING is f.default_factory]
        if missing:
            raise InputError(f"{source or cls.__name__}: missing '{missing[0]}'")
        try:
            return cls(**{k: v for k, v in doc.items() if k in names},
                       extra={k: v for k, v in doc.items() if k not in names})
        except (TypeError, ValueError) as exc:
            raise InputError(f"{source or cls.__name__}: {exc}") from None


def _plain(value):
    return value.to_dict() if isinstance(value, _Record) else value


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise InputError(what)


_WHAT = {str: ("a string", "strings"), int: ("a whole number", "whole numbers"), float: ("a number", "numbers"),
         bool: ("true or false", "true or false"), list: ("a list", "lists"), dict: ("an object", "objects")}


def _is(value, kind: type) -> bool:
    """JSON's view of `kind`: a whole number is a number, true and false are neither."""
    if kind in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, int | float) if kind is float else isinstance(value, kind)


@functools.cache
def _expected(cls) -> dict[str, tuple[type, type | None]]:
    """{field: (JSON type, type of its items or values)} of a section, from its annotations (`X | None`)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in fields(cls):
        if f.init and f.name != "extra":
            kind = next(a for a in typing.get_args(hints[f.name]) if a is not type(None))
            out[f.name] = (typing.get_origin(kind) or kind, (typing.get_args(kind) or (None,))[-1])
    return out


@dataclass(frozen=True)
class _Section(_Record):
    """A section of cmba.json: every field optional (None where the document leaves it out) and checked against its
    annotation; a section read from a document keeps that document's keys, their order and its nulls, so an
    existing cmba.json is written back byte for byte. Built in code, a field left None is not written."""

    extra: dict = field(default_factory=dict)
    """keys this version does not know, written back unchanged"""
    _keys: tuple | None = field(default=None, init=False, repr=False, compare=False)
    """the keys of the document read, in order (None: built in code)"""

    def __post_init__(self):
        for name, (kind, item) in _expected(type(self)).items():
            value = getattr(self, name)
            if value is None:
                continue
            items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
            if not _is(value, kind) or (item is not None and not all(_is(v, item) for v in items)):
                what = _WHAT[kind][0] + ("" if item is None else f" of {_WHAT[item][1]}" if kind is list
                                         else f" with {_WHAT[item][1]} as values")
                _need(False, f"{name}: must be {what}, got {json.dumps(value, default=str)[:60]}")

    def to_dict(self) -> dict:
        keys = self._keys or ()
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.init and f.name != "extra"}
        out = {**{k: v for k, v in out.items() if v is not None or k in keys}, **self.extra}
        return {k: out[k] for k in [*(k for k in keys if k in out), *(k for k in out if k not in keys)]}

    @classmethod
    def from_dict(cls, doc: dict, *, source: str = ""):
        """The section `doc`; InputError '<source>.<field>: must be ...' naming the field of a wrong type."""
        where = source or cls.__name__
        if not isinstance(doc, dict):
            raise InputError(f"{where}: must be an object")
        names = set(_expected(cls))
        try:
            record = cls(**{k: v for k, v in doc.items() if k in names},
                         extra={k: v for k, v in doc.items() if k not in names})
        except InputError as exc:
            raise InputError(f"{where}.{exc}") from None
        object.__setattr__(record, "_keys", tuple(doc))
        return record


# ------------------------------------------------------------------------------------------ cmba.json


@dataclass(frozen=True)
class BaseModelInfo(_Section):
    """cmba.json "base_model": the model an adapter was trained on (or a base reference evaluated)."""

    id: str | None = None
    """the model as `train --model` named it: a Hub id, a preset (demo) or a local folder"""
    hub_id: str | None = None
    """the Hub repository the weights came from; None for presets and local folders"""
    revision: str | None = None
    """the Hub revision (branch, tag or commit); None: the default branch"""
    model_type: str | None = None
    """transformers' config.model_type (llava, qwen2_vl, ...)"""
    family: str | None = None
    """the calculator's architecture family (adapters only)"""
    weights: str | None = None
    """where the weights were loaded from: the Hub id or the local folder (adapters only)"""


@dataclass(frozen=True)
class AllocationInfo(_Section):
    """cmba.json "allocation": the calculator's `Allocation.to_dict()` (toolkit.calculator.result)."""

    model: str | None = None
    model_type: str | None = None
    family: str | None = None
    mode: str | None = None
    """rank | share | audit"""
    ratio: list[float] | None = None
    """the requested vision : projector : language weights"""
    budget: int | None = None
    """the budget in trainable parameters (None in audit mode)"""
    budget_spec: str | None = None
    """the budget as asked for, in words ("uniform rank 8 equivalent")"""
    total: int | None = None
    """trainable parameters allocated"""
    trainable_params: int | None = None
    """= total"""
    budget_error: float | None = None
    """(total - budget) / budget in percent"""
    rounding: str | None = None
    """mixed (per-module floor/ceil mix, budget-exact) or uniform (one integer rank per component)"""
    granularity: float | None = None
    """the smallest |budget error| in % that the module sizes guarantee"""
    full_finetune: list[str] | None = None
    """components fully fine-tuned instead of LoRA"""
    achieved_ratio: list[float] | None = None
    """the ratio of the components' mean ranks"""
    alpha_rule: dict | None = None
    """{"rule", "value"}"""
    components: dict[str, dict] | None = None
    """{component: {rank, mean_rank, target_rank, rank_step, full, alpha, params, modules, target_kind,
    share_of_budget, share_of_model, capped_modules}}"""
    warnings: list[str] | None = None
    lora_config: dict | None = None
    """the `peft.LoraConfig` arguments"""
    module_detail: list[dict] | None = None
    """per-module allocations (`to_dict(with_modules=True)` only)"""


@dataclass(frozen=True)
class TrainingInfo(_Section):
    """cmba.json "training": `TrainSettings.hyperparameters()` with the precision used, the steps trained and the
    quantization (toolkit.training.engine.finish)."""

    seed: int | None = None
    max_steps: int | None = None
    """steps trained (a halving snapshot: the step it was taken at)"""
    epochs: float | None = None
    """the length asked for in epochs (None when max_steps was given)"""
    batch_size: int | None = None
    grad_accum: int | None = None
    learning_rate: float | None = None
    component_lr: dict[str, float] | None = None
    """{component: learning rate} of the components with their own"""
    warmup_ratio: float | None = None
    weight_decay: float | None = None
    lora_dropout: float | None = None
    max_grad_norm: float | None = None
    precision: str | None = None
    """the precision trained in (fp32, bf16, fp16), resolved from auto"""
    quantize: str | None = None
    """4bit (QLoRA) or None"""
    gradient_checkpointing: bool | None = None
    group_by_length: bool | None = None
    checkpoint_every: int | None = None
    quantization: dict | None = None
    """what was quantized, how (toolkit.training.modeling.quantization_doc); only with quantize"""
    allow_budget_error: bool | None = None
    """true when the allocation was accepted more than 1 % off its budget; absent otherwise"""


@dataclass(frozen=True)
class DatasetInfo(_Section):
    """cmba.json "dataset": the training data (toolkit.data.sources.DatasetInfo) and what the run trained on."""

    id: str | None = None
    revision: str | None = None
    split: str | None = None
    size: int | None = None
    """records used (after holdout and limit)"""
    source_size: int | None = None
    """records in the split before holdout and limit"""
    limit: int | None = None
    sample_seed: int | None = None
    """the seed that picked the limit subset"""
    columns: dict | None = None
    """the column mapping of a dataset with other column names"""
    holdout: float | None = None
    """fraction of the split's images held out; absent for the whole split"""
    part: str | None = None
    """with holdout: train or holdout (the part of the split trained on)"""
    trained_on: dict | None = None
    """{"questions", "images", "digest"} of trained_on.json (toolkit.data.hygiene.TrainedOn.summary)"""


@dataclass(frozen=True)
class ResultInfo(_Section):
    """cmba.json "result": how the training went (toolkit.training.engine.finalize, toolkit.study.rung)."""

    steps: int | None = None
    """optimizer steps trained"""
    schedule_steps: int | None = None
    """a halving snapshot's full schedule (its learning rate followed that); absent for a finished run"""
    train_time_s: float | None = None
    samples_per_s: float | None = None
    final_loss: float | None = None
    peak_memory_bytes: int | None = None
    peak_memory_kind: str | None = None
    """what peak_memory_bytes measures (cuda_max_allocated, cpu_max_rss, ...)"""
    no_gradient_modules: list[str] | None = None
    """modules with LoRA that received no gradient"""
    device: str | None = None
    """cpu, cuda, mps"""
    distributed: dict | None = None
    """world_size, backend, per-device batch (torchrun only)"""
    snapshot_of: str | None = None
    """a halving snapshot: the run folder it was taken from"""


_SECTIONS = {"base_model": BaseModelInfo, "allocation": AllocationInfo, "training": TrainingInfo,
             "dataset": DatasetInfo, "result": ResultInfo}


@dataclass(frozen=True)
class AdapterDoc(_Record):
    """cmba.json: what an adapter (or a base-model reference) is and how it was made. Its sections are typed
    records (a dict given for one is read as that record); `versions` stays {package: version}."""

    format: str = FORMAT
    kind: str = "adapter"
    """"adapter" (trained) or "base" (a base model's reference evaluations)"""
    name: str = ""
    created: str | None = None
    base_model: BaseModelInfo = field(default_factory=BaseModelInfo)
    allocation: AllocationInfo | None = None
    training: TrainingInfo | None = None
    dataset: DatasetInfo | None = None
    result: ResultInfo | None = None
    versions: dict | None = None
    """{package: version} at training time"""
    extra: dict = field(default_factory=dict)
    """keys this version does not know, written back unchanged"""

    _optional = ("created", "allocation", "training", "dataset", "result", "versions")

    def __post_init__(self):
        _need(isinstance(self.name, str) and bool(self.name), "name: must be a non-empty string")
        _need(self.kind in KINDS, f"kind: '{self.kind}' is not one of {', '.join(KINDS)}")
        _need(self.format in READABLE_FORMATS, f"format: '{self.format}' is not readable by this version "
                                               f"(reads {', '.join(READABLE_FORMATS)})")
        for name, kind in _SECTIONS.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, kind.from_dict(value, source=name))
            else:
                _need(isinstance(value, kind) or (value is None and name != "base_model"), f"{name}: must be an object")
        _need(isinstance(self.versions, dict | None), "versions: must be an object")


@dataclass(frozen=True)
class RunInfo(_Record):
    """run.json: the settings of a run in progress (what a resume must match)."""

    fingerprint: str
    max_steps: int
    settings: dict = field(default_factory=dict)
    dataset: dict = field(default_factory=dict)
    started: float | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        _need(isinstance(self.fingerprint, str) and bool(self.fingerprint), "fingerprint: must be a non-empty string")
        _need(isinstance(self.max_steps, int) and self.max_steps >= 1, f"max_steps: must be >= 1, got {self.max_steps}")


def is_complete(folder: str | Path) -> bool:
    """Whether `folder` holds a finished run (its cmba.json, written last, exists)."""
    return (Path(folder) / ADAPTER_DOC).is_file()


def write_adapter_doc(folder: str | Path, doc: AdapterDoc) -> dict:
    """cmba.json, atomically (the completion marker); returns the document written."""
    write_json(Path(folder) / ADAPTER_DOC, doc.to_dict())
    return doc.to_dict()


def read_adapter_doc(folder: str | Path, *, label: str = "adapter") -> AdapterDoc:
    """The AdapterDoc of `folder`; InputError naming the file when it is missing, damaged or invalid."""
    path = Path(folder) / ADAPTER_DOC
    if not path.is_file():
        raise InputError(f"{label}: '{folder}' has no {ADAPTER_DOC} (not a complete CMBA adapter: unfinished "
                         f"training, or an adapter made elsewhere)")
    doc = read_json(path, label=label)
    return AdapterDoc.from_dict({**doc, "name": doc.get("name") or Path(folder).name}, source=f"{label}: '{path}'")


def write_run_info(folder: str | Path, info: RunInfo) -> None:
    write_json(Path(folder) / RUN_INFO, info.to_dict())


def read_run_info(folder: str | Path) -> RunInfo | None:
    """run.json of a run in progress, None when there is none."""
    path = Path(folder) / RUN_INFO
    return RunInfo.from_dict(read_json(path), source=str(path)) if path.is_file() else None


def clear_run_info(folder: str | Path) -> None:
    (Path(folder) / RUN_INFO).unlink(missing_ok=True)


def write_trained_on(folder: str | Path, text: str) -> None:
    """trained_on.json (the JSON text of a `TrainedOn`), atomically."""
    write_json(Path(folder) / TRAINED_ON, json.loads(text))


def read_trained_on(folder: str | Path) -> str | None:
    """The JSON text of trained_on.json; None for runs that predate it."""
    path = Path(folder) / TRAINED_ON
    return json.dumps(read_json(path)) if path.is_file() else None


def has_weights(folder: str | Path) -> bool:
    """Whether PEFT's safetensors weights are there (pickle weights are never loaded)."""
    return (Path(folder) / ADAPTER_WEIGHTS).is_file()


def run_folders(root: str | Path) -> list[Path]:
    """Every visible sub-folder of the adapter store `root`, sorted by name ([] when `root` is not a folder)."""
    root = Path(root)
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


def list_adapters(root: str | Path, *, kind: str | None = "adapter") -> list[tuple[Path, AdapterDoc]]:
    """(folder, doc) of every complete, readable run in `root` of `kind` (None: any); trained adapters also need
    their safetensors. Unreadable folders are left out (`read_adapter_doc` says why)."""
    out = []
    for folder in filter(is_complete, run_folders(root)):
        with contextlib.suppress(InputError):
            doc = read_adapter_doc(folder)
            if (kind is None or doc.kind == kind) and (doc.kind == "base" or has_weights(folder)):
                out.append((folder, doc))
    return out


def base_folder(model: str, *, root: str | Path) -> Path:
    """Where the base model `model`'s reference evaluations live: `<root>/base--<model slug>`."""
    name = Path(model).name if Path(model).exists() else model.replace("/", "--")
    return Path(root) / f"{BASE_PREFIX}{slug(name, limit=200)}"


# ------------------------------------------------------------------------------------------ metrics.jsonl


@dataclass(frozen=True)
class MetricLine(_Record):
    """One line of metrics.jsonl: the state after optimizer step `step`."""

    step: int
    max_steps: int | None = None
    epoch: float | None = None
    loss: float | None = None
    lr: float | None = None
    samples_per_s: float | None = None
    elapsed_s: float | None = None
    eta_s: float | None = None
    time: float | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        _need(isinstance(self.step, int) and not isinstance(self.step, bool) and self.step >= 0,
              f"step: must be a whole number >= 0, got {self.step!r}")
        for f in fields(self)[1:-1]:
            value = getattr(self, f.name)
            _need(value is None or (isinstance(value, int | float) and not isinstance(value, bool)),
                  f"{f.name}: must be a number, got {value!r}")


def metrics_path(folder: str | Path) -> Path:
    return Path(folder) / METRICS


def append_metric(folder: str | Path, line: MetricLine) -> None:
    """Append one line (flushed: the UI reads the file while training writes it)."""
    with open(metrics_path(folder), "a", encoding="utf-8") as f:
        f.write(json.dumps(line.to_dict()) + "\n")
        f.flush()


def _metric_lines(rows) -> list[MetricLine]:
    out = []
    for row in rows or []:
        with contextlib.suppress(InputError):  # not a metrics line of this toolkit
            out.append(MetricLine.from_dict(row))
    return out


def read_metrics(folder: str | Path | None) -> list[MetricLine]:
    """Every complete line of `<folder>/metrics.jsonl` ([] when there is none; a line being written is skipped)."""
    return _metric_lines(_json_lines(metrics_path(folder))) if folder else []


def last_metric(folder: str | Path | None) -> MetricLine | None:
    """The last complete metrics line, read from the end of the file (cheap on long runs)."""
    if not folder:
        return None
    try:
        with open(metrics_path(folder), "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 16384))
            found = _metric_lines(_objects(f.read().decode("utf-8", errors="replace").split("\n")[-3:]))
    except OSError:
        return None
    return found[-1] if found else None


def truncate_metrics(folder: str | Path, *, step: int) -> None:
    """Drop the lines past `step` (a resume from that checkpoint produces them again) and any torn line."""
    path = metrics_path(folder)
    if path.exists():
        keep = [m for m in read_metrics(folder) if m.step <= step]
        path.write_text("".join(json.dumps(m.to_dict()) + "\n" for m in keep), encoding="utf-8")


# ------------------------------------------------------------------------------------------ checkpoints


def checkpoints_dir(folder: str | Path) -> Path:
    return Path(folder) / CHECKPOINTS


def checkpoint_path(folder: str | Path, step: int) -> Path:
    """Where checkpoint `step` lives once complete (written under a temporary name, then renamed here)."""
    return checkpoints_dir(folder) / f"step-{step:07d}"


def complete_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint (renamed into place, with its state.json), oldest first."""
    where = checkpoints_dir(folder)
    found = [(int(m.group(1)), p) for p in (where.iterdir() if where.is_dir() else [])
             if (m := _STEP.match(p.name)) and p.is_dir() and (p / CHECKPOINT_STATE).is_file()]
    return sorted(found)


def snapshot_dir(output: str | Path, until: int) -> Path:
    """Where the adapter at step `until` of the run in `output` goes (a halving rung's snapshot, written by a rung
    job or a pack at a rung): a sibling folder of the run."""
    out = Path(output)
    return out.parent / f"{out.name}-step{until:07d}"


def latest_checkpoint(folder: str | Path | None) -> Path | None:
    """The newest complete checkpoint of a run, or None (also for no folder)."""
    found = complete_checkpoints(folder) if folder else []
    return found[-1][1] if found else None


# ------------------------------------------------------------------------------------------ evaluations


@dataclass(frozen=True)
class EvalResult(_Record):
    """eval/<tag>/results.json: the scores of one evaluation and what was evaluated, how."""

    format: str = EVAL_FORMAT
    adapter: str | None = None
    """the adapter's name; None for a base-model reference"""
    base_model: str | None = None
    dataset: dict = field(default_factory=dict)
    """id, split, limit, n, source_size, revision, sample_seed"""
    settings: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)
    """overall (VQA accuracy %), per_answer_type, per_question_type, n"""
    eval_time_s: float | None = None
    questions_per_s: float | None = None
    created: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        _need(self.format == EVAL_FORMAT, f"format: '{self.format}' is not readable by this version (reads {EVAL_FORMAT})")
        _need(isinstance(self.scores, dict) and isinstance(self.scores.get("overall"), int | float),
              "scores: must be an object with a numeric 'overall'")
        for name in ("dataset", "settings"):
            _need(isinstance(getattr(self, name), dict), f"{name}: must be an object")


@dataclass(frozen=True)
class Prediction(_Record):
    """One line of eval/<tag>/predictions.jsonl: a question, the model's answer, the humans' and the score."""

    _optional = ("image_id",)

    question_id: str
    prediction: str | None = None
    answers: list = field(default_factory=list)
    accuracy: float | None = None
    """None in files from elsewhere: the reader scores it again"""
    question: str | None = None
    raw_prediction: str | None = None
    normalized_prediction: str | None = None
    """the official normalisation of `prediction`, for display only (the score uses `prediction`)"""
    answer_type: str | None = None
    question_type: str | None = None
    image_id: str | None = None
    """the question's image (questions on one image are resampled together); absent in older files"""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "question_id", str(self.question_id))  # ints in some datasets, keys are text
        _need(isinstance(self.prediction, str) or (self.prediction is None and self.accuracy is not None),
              "prediction: must be a string (it may be left out where accuracy is given)")
        _need(isinstance(self.answers, list), "answers: must be a list")


def eval_dir(folder: str | Path, tag: str) -> Path:
    return Path(folder) / EVAL / tag


def evaluations(folder: str | Path) -> list[str]:
    """Tags of the evaluations stored in `folder` (those with a results.json), sorted."""
    where = Path(folder) / EVAL
    found = where.iterdir() if where.is_dir() else []
    return sorted(t.name for t in found if not t.name.startswith(".") and (t / RESULTS).is_file())


def read_evaluation(folder: str | Path, tag: str) -> EvalResult:
    """eval/<tag>/results.json; InputError naming the file when it is missing, damaged or invalid."""
    path = eval_dir(folder, tag) / RESULTS
    return EvalResult.from_dict(read_json(path, label="eval results"), source=f"eval results: '{path}'")


def read_predictions(folder: str | Path, tag: str) -> list[Prediction] | None:
    """The per-question lines of evaluation `tag`, None when it has no predictions.jsonl."""
    where = eval_dir(folder, tag) / PREDICTIONS
    rows = _json_lines(where)
    return None if rows is None else [Prediction.from_dict(r, source=f"predictions: '{where}'") for r in rows]


def write_evaluation(folder: str | Path, tag: str, *, result: EvalResult, predictions: list[Prediction]) -> Path:
    """results.json + predictions.jsonl of evaluation `tag`, swapped in as one folder (a reader sees the old
    evaluation or the new one, never half of it); returns the evaluation's folder."""
    folder = Path(folder)
    target, tmp = eval_dir(folder, tag), folder / EVAL / f".{tag}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with open(tmp / PREDICTIONS, "w", encoding="utf-8") as f:
            for p in predictions:
                f.write(json.dumps(p.to_dict(), default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        write_json(tmp / RESULTS, result.to_dict())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = folder / EVAL / f".{tag}.old-{os.getpid()}"
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


# ------------------------------------------------------------------------------------------ retrieval

RETRIEVAL = "retrieval"
RETRIEVAL_FORMAT = "cmba-retrieval/1"


def write_retrieval(folder: str | Path, tag: str, doc: dict) -> Path:
    """retrieval/<tag>.json: one image-text retrieval evaluation (toolkit.evaluation.retrieval), atomically.
    Kept apart from eval/, whose results are VQA accuracies."""
    path = Path(folder) / RETRIEVAL / f"{tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"format": RETRIEVAL_FORMAT, **doc})
    return path


def read_retrievals(folder: str | Path) -> dict[str, dict]:
    """{tag: document} of every readable retrieval evaluation of a run folder ({} when none)."""
    where = Path(folder) / RETRIEVAL
    out = {}
    for path in sorted(where.glob("*.json")) if where.is_dir() else []:
        try:
            doc = read_json(path, label="retrieval")
        except InputError:
            continue
        if doc.get("format") == RETRIEVAL_FORMAT and isinstance(doc.get("recall"), dict):
            out[path.stem] = doc
    return out
