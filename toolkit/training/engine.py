"""Train one LoRA adapter for one allocation (the engine behind `python -m toolkit train` and the job system).

    >>> settings = TrainSettings(model="demo", dataset="synthetic:shapes?n=2000", spec=AllocationSpec(...),
    ...                          max_steps=200, output="adapters/demo-1-4-1-s0")
    >>> result = train(settings)                       # adapters/demo-1-4-1-s0/{adapter files, cmba.json}

The loop is plain PyTorch + PEFT (no Trainer), so that what matters for the study is explicit:
- the `peft.LoraConfig` is the calculator's, and PEFT's trainable-parameter count must equal the allocation's
  total before anything is trained;
- after the first optimizer step every adapted module is checked for a gradient; those without one (budget
  spent on dead modules) are warned about and recorded in cmba.json;
- the data order is a pure function of (seed, step): sample k of the run is `permutation(seed, epoch)[k % N]`,
  so `--resume` from step s sees exactly the batches an uninterrupted run would have seen;
- checkpoints are atomic (toolkit.training.checkpoint) and carry optimizer and RNG state, so an interrupted and
  resumed run reproduces the uninterrupted loss curve;
- metrics go to `metrics.jsonl` (one line per step) as they happen, for the CLI and the app to read;
- `cmba.json` is written last and atomically: its presence means the adapter is complete.
SIGTERM / SIGUSR2 (cancel, Slurm preemption) save a checkpoint at the next step boundary and exit 143.

Under torchrun (`python -m toolkit.training.distributed`, several GPUs) every rank runs this loop on its share of
each optimizer step's batch (toolkit.training.distributed: the global batch stays batch-size x grad-accum), the LoRA
gradients are averaged over ranks before the optimizer step, and only rank 0 writes (metrics, checkpoints,
adapter, cmba.json). A single process does exactly what it did before.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import platform
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from toolkit import runs
from toolkit.errors import CmbaError, InputError
from toolkit.training import checkpoint

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
FORMAT = runs.FORMAT
ADAPTER_FILES = runs.ADAPTER_FILES


class OutOfMemory(CmbaError):
    """Training ran out of (GPU) memory; the CLI exits 3 with reason out_of_memory."""


class Interrupted(CmbaError):
    """A termination signal arrived; a checkpoint was saved (exit 143)."""


@dataclass
class TrainSettings:
    model: str
    dataset: str
    spec: object = None
    """AllocationSpec, or None with `audit_ranks`"""
    audit_ranks: tuple | None = None
    """explicit v:p:l ranks (audit mode) instead of a solved allocation"""
    audit_budget: object = None
    targets: object = None
    alpha: object = None
    patterns: str | None = None
    revision: str | None = None
    split: str = "train"
    limit: int | None = None
    columns: dict = field(default_factory=dict)
    image_dir: str | None = None
    dataset_revision: str | None = None
    dataset_config: str | None = None
    sample_seed: int = 0
    seed: int = 0
    max_steps: int | None = None
    epochs: float | None = None
    batch_size: int = 8
    grad_accum: int = 1
    learning_rate: float = 2e-4
    component_lr: dict = field(default_factory=dict)
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    lora_dropout: float = 0.05
    max_grad_norm: float = 1.0
    precision: str = "auto"
    gradient_checkpointing: bool = False
    quantize: str | None = None
    checkpoint_every: int = 50
    output: str | None = None
    name: str | None = None
    resume: bool = False
    overwrite: bool = False
    keep_checkpoints: bool = False
    progress: bool = True

    def hyperparameters(self) -> dict:
        """What cmba.json records under "training" (and what a resume must match)."""
        keys = ("seed", "max_steps", "epochs", "batch_size", "grad_accum", "learning_rate", "component_lr",
                "warmup_ratio", "weight_decay", "lora_dropout", "max_grad_norm", "precision", "quantize",
                "gradient_checkpointing", "checkpoint_every")
        return {k: getattr(self, k) for k in keys}


# ------------------------------------------------------------------------------------- validation


def validate(s: TrainSettings) -> None:
    """Cheap checks of every setting, before anything heavy is loaded."""
    def positive_int(name, value):
        if not isinstance(value, int) or value < 1:
            raise InputError(f"{name}: must be a whole number >= 1, got {value}")

    if s.max_steps is not None and s.epochs is not None:
        raise InputError("max-steps: give either --max-steps or --epochs, not both")
    if s.max_steps is not None:
        positive_int("max-steps", s.max_steps)
    if s.epochs is not None and not (isinstance(s.epochs, int | float) and s.epochs > 0):
        raise InputError(f"epochs: must be > 0, got {s.epochs}")
    positive_int("batch-size", s.batch_size)
    positive_int("grad-accum", s.grad_accum)
    positive_int("checkpoint-every", s.checkpoint_every)
    for name, lr in [("lr", s.learning_rate)] + [(f"lr-{c}", v) for c, v in s.component_lr.items()]:
        if not (isinstance(lr, int | float) and 0 < lr < 1):
            raise InputError(f"{name}: must be a learning rate in (0, 1), got {lr}")
    if not 0 <= s.warmup_ratio < 1:
        raise InputError(f"warmup-ratio: must be in [0, 1), got {s.warmup_ratio}")
    if not 0 <= s.lora_dropout < 1:
        raise InputError(f"lora-dropout: must be in [0, 1), got {s.lora_dropout}")
    if s.precision not in PRECISIONS:
        raise InputError(f"precision: '{s.precision}' is not one of {', '.join(PRECISIONS)}")
    if s.quantize not in (None, "4bit"):
        raise InputError(f"quantize: '{s.quantize}' is not supported (allowed: 4bit)")
    if s.name is not None and (not s.name or "/" in s.name or s.name.startswith(".")):
        raise InputError(f"name: '{s.name}' must be a plain folder name (no '/', not starting with '.')")


def quiet_libraries() -> None:
    """Silence import-time chatter that is not the user's concern (bitsandbytes' optional CPU kernels, a
    deprecation inside PEFT), so logs show the training."""
    import logging
    import warnings

    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def _device():
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


default_device = _device
"""the device a single process trains and evaluates on: the GPU when there is one"""


def resolve_precision(precision: str, device) -> str:
    import torch

    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise InputError("precision: fp16 needs a CUDA GPU (mixed precision with loss scaling); use fp32 or bf16 on CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InputError("precision: this GPU does not support bf16; use fp16 or fp32")
    return precision


def check_bitsandbytes(device) -> None:
    """`--quantize 4bit` only where bitsandbytes really runs: a tiny nf4 round trip on the target device."""
    try:
        import logging

        logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
        import bitsandbytes.functional as bnbf
        import torch
    except Exception as exc:  # noqa: BLE001 - any import failure means "cannot run"
        raise InputError(f"quantize: 4bit needs bitsandbytes, which cannot be imported here ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); pip install bitsandbytes>=0.45") from None
    try:
        w = torch.randn(64, 64, device=device)
        q, state = bnbf.quantize_4bit(w, quant_type="nf4")
        back = bnbf.dequantize_4bit(q, state)
        if back.shape != w.shape:
            raise RuntimeError("wrong shape")
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"quantize: bitsandbytes cannot run 4-bit on {device.type} here "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); train without --quantize") from None


# ------------------------------------------------------------------------------------- model


def model_source(structure) -> tuple[str, str | None]:
    """Where the weights come from: (path or Hub id, Hub id or None)."""
    from toolkit.training.demo import demo_model_dir

    if structure.source == "preset" and structure.model_id == "demo":
        return str(demo_model_dir()), None
    if structure.source == "preset":
        if not structure.hub_id:
            raise InputError(f"model: preset '{structure.model_id}' has no weights to train (configs only)")
        return structure.hub_id, structure.hub_id
    if structure.source == "local":
        return str(Path(structure.model_id).resolve()), None
    return structure.model_id, structure.model_id


def load_model(structure, *, precision: str, quantize: str | None, device, revision: str | None = None):
    """The base model and its processor, weights from the demo folder, a local folder or the Hub."""
    import torch
    import transformers
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from toolkit.errors import ModelLoadError

    source, hub_id = model_source(structure)
    if hub_id and not Path(source).exists():
        from toolkit.calculator.structure import _hub_reachable

        if not _hub_reachable():
            raise ModelLoadError(f"model: weights of '{hub_id}' must be downloaded from the Hub, which is unreachable "
                                 f"(offline); train the offline `demo` preset or pass a local folder with weights")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    kwargs = {"dtype": dtype, "revision": revision}
    if quantize == "4bit":
        from transformers import BitsAndBytesConfig

        keep = [m.name for m in structure.linears("projector")] + ["lm_head"]
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32 if precision == "fp32" else dtype, llm_int8_skip_modules=keep)
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
        processor = AutoProcessor.from_pretrained(source, revision=revision)
    except (OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelLoadError(f"model: cannot load weights of '{structure.model_id}' ({first})") from None
    if quantize != "4bit":
        model.to(device)
    return model, processor


def apply_lora(model, allocation, *, lora_dropout: float, quantized: bool, gradient_checkpointing: bool):
    """PEFT model with the calculator's LoraConfig; refuses if PEFT's count differs from the allocation's."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    config = LoraConfig(**{**allocation.lora_config_dict(), "lora_dropout": lora_dropout})
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as exc:
        raise InputError(f"allocation: its LoraConfig does not fit this model ({str(exc).splitlines()[0]})") from None
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    if trainable != allocation.total:
        raise InputError(f"allocation: PEFT makes {trainable:,} parameters trainable on the loaded model but the "
                         f"allocation predicts {allocation.total:,}; the weights do not match the config the "
                         f"allocation was computed from")
    return peft_model


def _module_of(param_name: str) -> str:
    """'base_model.model.<module>.lora_A.default.weight' -> '<module>'."""
    name = param_name.removeprefix("base_model.model.")
    for marker in (".lora_A.", ".lora_B."):
        if marker in name:
            return name.split(marker)[0]
    return name


def param_groups(peft_model, allocation, settings: TrainSettings) -> list[dict]:
    """One optimizer group per component, so per-component learning rates apply."""
    component = {m.name: m.component for m in allocation.modules}
    groups: dict[str, list] = {}
    for name, p in peft_model.named_parameters():
        if p.requires_grad:
            groups.setdefault(component.get(_module_of(name), "other"), []).append(p)
    return [{"params": ps, "lr": settings.component_lr.get(c, settings.learning_rate),
             "base_lr": settings.component_lr.get(c, settings.learning_rate), "component": c,
             "weight_decay": settings.weight_decay} for c, ps in sorted(groups.items())]


def modules_without_gradient(peft_model) -> list[str]:
    """Adapted modules whose LoRA B received no (or an all-zero) gradient in the last backward pass."""
    dead = []
    for name, module in peft_model.named_modules():
        lora_b = getattr(module, "lora_B", None)
        if lora_b is None or not hasattr(lora_b, "keys") or "default" not in lora_b:
            continue
        grad = lora_b["default"].weight.grad
        if grad is None or not bool(grad.abs().sum() > 0):
            dead.append(name.removeprefix("base_model.model."))
    return dead


# ------------------------------------------------------------------------------------- run folder


def _slug(text: str) -> str:
    return runs.slug(text)


def default_name(settings: TrainSettings, allocation) -> str:
    """`<model>-<v>-<p>-<l>-<budget>-s<seed>`, e.g. demo-1-4-1-rank8-s0 (audit: demo-audit4-16-4-s0)."""
    model = _slug(Path(settings.model).name if Path(settings.model).exists() else settings.model.split("/")[-1])
    if settings.audit_ranks is not None:
        return f"{model}-audit{'-'.join(str(r) for r in settings.audit_ranks)}-s{settings.seed}"
    spec = settings.spec
    ratio = "-".join(f"{w:g}" for w in spec.ratio.as_tuple())
    budget = f"{spec.budget.kind}{spec.budget.value:g}"
    mode = "" if spec.mode == "rank" else f"-{spec.mode}"
    return _slug(f"{model}-{ratio}-{budget}{mode}-s{settings.seed}")


def fingerprint(settings: TrainSettings, allocation, data_info) -> str:
    """What must be identical for a checkpoint to be resumable."""
    doc = {"model": settings.model, "revision": settings.revision, "lora": allocation.lora_config_dict(),
           "data": {k: data_info[k] for k in ("id", "split", "size", "limit", "sample_seed")},
           "training": {k: v for k, v in settings.hyperparameters().items() if k != "checkpoint_every"}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _atomic_json(path: Path, data) -> None:
    runs.write_json(path, data)


def prepare_output(out: Path, settings: TrainSettings) -> None:
    """Refuse to clobber a finished adapter or a partial run unless asked to."""
    import shutil

    done = runs.is_complete(out)
    partial = runs.latest_checkpoint(out) is not None or runs.metrics_path(out).exists()
    if settings.overwrite and out.exists():
        shutil.rmtree(out)
    elif done and settings.resume:
        return
    elif done:
        raise InputError(f"output: '{out}' already holds a complete adapter; choose another --name/--output "
                         f"or pass --overwrite")
    elif partial and not settings.resume:
        raise InputError(f"output: '{out}' holds an unfinished run; pass --resume to continue it or --overwrite "
                         f"to start over")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"output: cannot write to '{out}' ({exc.strerror})") from None


def versions() -> dict:
    import importlib.metadata as md

    from toolkit import __version__

    out = {"python": platform.python_version(), "cmba": __version__}
    for pkg in ("torch", "transformers", "peft", "accelerate", "datasets", "bitsandbytes", "safetensors"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


# ------------------------------------------------------------------------------------- loop


class _Signals:
    """SIGTERM / SIGUSR2 -> finish the step, checkpoint, exit 143 (main thread only)."""

    def __init__(self):
        self.received = None
        self._old = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGUSR2):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


@functools.lru_cache(maxsize=4)
def sample_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    """The order of epoch `epoch`: a permutation that depends on (seed, epoch) only."""
    import torch

    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return tuple(torch.randperm(n, generator=g).tolist())


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 0 (per optimizer step)."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _peak_memory(device) -> tuple[int | None, str]:
    import resource

    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "cpu_max_rss"


def _quiet(msg: str) -> None:  # noqa: ARG001 - ranks other than 0 keep quiet
    return None


def _log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def train(settings: TrainSettings, *, log=_log, stop_after: int | None = None, keep: dict | None = None) -> dict:
    """Run (or resume) one training; returns the cmba.json document.

    `stop_after`: stop after that many optimizer steps with a checkpoint, as a signal would (tests, demos).
    `keep`: a dict that receives the trained in-memory "model" (PEFT) and "processor" (tests, notebooks).
    """
    import torch

    from toolkit.calculator.allocation import allocate, audit
    from toolkit.calculator.architectures import ComponentPatterns
    from toolkit.calculator.structure import load_structure
    from toolkit.data.prompting import VQAFormatter
    from toolkit.data.sources import load_vqa
    from toolkit.paths import adapters_dir
    from toolkit.training import distributed

    validate(settings)
    quiet_libraries()
    dist = distributed.from_env()  # None: one process, the plain path
    if dist is not None:
        dist.plan_batches(settings.batch_size, settings.grad_accum)
        if not dist.main:
            log = _quiet
    device = _device() if dist is None else dist.device
    precision = resolve_precision(settings.precision, device)
    if settings.quantize == "4bit":
        check_bitsandbytes(device)

    patterns = ComponentPatterns.parse(settings.patterns) if settings.patterns else None
    structure = load_structure(settings.model, patterns=patterns, revision=settings.revision)
    if settings.audit_ranks is not None:
        allocation = audit(structure, settings.audit_ranks, budget=settings.audit_budget, targets=settings.targets,
                           alpha=settings.alpha)
    else:
        allocation = allocate(structure, settings.spec)
    data = load_vqa(settings.dataset, split=settings.split, limit=settings.limit, columns=settings.columns,
                    image_dir=settings.image_dir, revision=settings.dataset_revision, config=settings.dataset_config,
                    sample_seed=settings.sample_seed)
    data_info = data.info.to_dict()

    name = settings.name or default_name(settings, allocation)
    out = Path(settings.output) if settings.output else adapters_dir() / name
    name = out.name
    if dist is None:
        prepare_output(out, settings)
    else:  # rank 0 alone creates (or clears) the folder; every rank stops on its refusal
        problem = None
        if dist.main:
            try:
                prepare_output(out, settings)
            except InputError as exc:
                problem = str(exc)
        problem = dist.broadcast_text(problem)
        if problem:
            raise InputError(problem)
    if (out / "cmba.json").exists():  # --resume of a finished run: nothing to do
        log(f"{out} is already complete")
        return json.loads((out / "cmba.json").read_text())

    n = len(data)
    per_step = settings.batch_size * settings.grad_accum
    max_steps = settings.max_steps or max(1, math.ceil((settings.epochs or 1.0) * n / per_step))
    warmup = max(1, round(settings.warmup_ratio * max_steps)) if settings.warmup_ratio > 0 else 0
    fp = fingerprint(settings, allocation, data_info)

    torch.manual_seed(settings.seed)
    model, processor = load_model(structure, precision=precision, quantize=settings.quantize, device=device,
                                  revision=settings.revision)
    peft_model = apply_lora(model, allocation, lora_dropout=settings.lora_dropout,
                            quantized=settings.quantize == "4bit", gradient_checkpointing=settings.gradient_checkpointing)
    fmt = VQAFormatter(processor, structure.model_type)
    groups = param_groups(peft_model, allocation, settings)
    optimizer = torch.optim.AdamW(groups, lr=settings.learning_rate, weight_decay=settings.weight_decay)

    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    start, train_time, no_grad = 0, 0.0, None
    metrics_path = out / "metrics.jsonl"
    last = checkpoint.latest(out) if settings.resume else None
    if last is not None:
        state = json.loads((last / "state.json").read_text())
        if state.get("fingerprint") != fp:
            raise InputError(f"resume: the checkpoint in '{out}' was made with other settings (model, data, "
                             f"allocation or hyper-parameters differ); use the same flags or --overwrite")
        adapter, state = checkpoint.load(last, optimizer)
        set_peft_model_state_dict(peft_model, adapter)
        start, train_time, no_grad = state["step"], state["train_time_s"], state.get("no_gradient_modules")
        log(f"resuming {name} from step {start}/{max_steps} ({last.name})")
    main = dist is None or dist.main
    if dist is not None:
        dist.broadcast_params(p for g in groups for p in g["params"])
    if main:
        _truncate_metrics(metrics_path, start)
        _atomic_json(out / "run.json", {"fingerprint": fp, "max_steps": max_steps, "settings": _settings_doc(settings),
                                        "dataset": data_info, "started": time.time()})

    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    peft_model.train()
    bar = _progress(settings.progress and main, start, max_steps, name)
    t_run = time.perf_counter()
    loss_value = float("nan")
    micro_steps = settings.grad_accum if dist is None else dist.accum
    with _Signals() as signals, open(metrics_path if main else os.devnull, "a") as metrics:
        for step in range(start, max_steps):
            t0 = time.perf_counter()
            for g in optimizer.param_groups:
                g["lr"] = g["base_lr"] * lr_factor(step, max_steps, warmup)
            loss_sum = 0.0
            for micro in range(micro_steps):
                if dist is None:
                    first, size = (step * settings.grad_accum + micro) * settings.batch_size, settings.batch_size
                else:
                    first, size = dist.micro_batch(step, micro, settings.batch_size, settings.grad_accum)
                records = [data[_index(k, n, settings.seed)] for k in range(first, first + size)]
                batch = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in fmt.train_batch(records).items()}
                try:
                    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                        loss = peft_model(**batch).loss / micro_steps
                    (scaler.scale(loss) if scaler else loss).backward()
                except torch.OutOfMemoryError as exc:
                    raise OutOfMemory(f"out_of_memory: step {step + 1} at batch size {settings.batch_size} "
                                      f"({str(exc).splitlines()[0]}); lower --batch-size, raise --grad-accum, "
                                      f"or use --gradient-checkpointing / --quantize 4bit") from None
                loss_sum += loss.item()
            if dist is not None:  # what DDP would do: average the gradients, and report the global loss
                dist.reduce_grads(p for g in groups for p in g["params"])
                loss_sum = dist.mean(loss_sum)
            if step == 0 and no_grad is None:
                no_grad = modules_without_gradient(peft_model)
                if no_grad:
                    log(f"warning: {len(no_grad)} adapted modules received no gradient (budget spent on dead "
                        f"modules): {', '.join(no_grad[:5])}{' ...' if len(no_grad) > 5 else ''}")
            if scaler:
                scaler.unscale_(optimizer)
            if settings.max_grad_norm:
                torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], settings.max_grad_norm)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = loss_sum
            dt = time.perf_counter() - t0
            train_time += dt
            done = step + 1
            elapsed = time.perf_counter() - t_run
            rate = (done - start) * per_step / elapsed if elapsed > 0 else 0.0
            eta = (max_steps - done) * elapsed / (done - start)
            line = {"step": done, "max_steps": max_steps, "epoch": done * per_step / n, "loss": loss_value,
                    "lr": optimizer.param_groups[0]["lr"], "samples_per_s": rate, "elapsed_s": train_time,
                    "eta_s": eta, "time": time.time()}
            metrics.write(json.dumps(line) + "\n")
            metrics.flush()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}")
            elif done % 10 == 0 or done == max_steps or done == start + 1:
                log(f"step {done}/{max_steps} loss {loss_value:.4f} lr {line['lr']:.2e} {rate:.1f} samples/s "
                    f"eta {eta:.0f}s")
            interrupt = signals.received or (stop_after is not None and done - start >= stop_after)
            if dist is not None:  # every rank stops at the same step, whichever got the signal
                interrupt = dist.any(bool(interrupt))
            if main and (done % settings.checkpoint_every == 0 or (interrupt and done < max_steps)):
                state = {"fingerprint": fp, "train_time_s": train_time, "no_gradient_modules": no_grad,
                         "max_steps": max_steps}
                checkpoint.save(out, done, adapter=get_peft_model_state_dict(peft_model), optimizer=optimizer,
                                state=state)
            if interrupt and done < max_steps:
                if bar is not None:
                    bar.close()
                if dist is not None:
                    dist.barrier()  # rank 0's checkpoint is complete before any rank exits
                raise Interrupted(f"interrupted by {signals.received or ('a signal' if dist else 'stop_after')} at "
                                  f"step {done}/{max_steps}; "
                                  f"checkpoint saved, continue with --resume")
    if bar is not None:
        bar.close()
    peak, peak_kind = _peak_memory(device)
    result = {"steps": max_steps, "train_time_s": round(train_time, 3),
              "samples_per_s": round(max_steps * per_step / train_time, 3) if train_time else None,
              "final_loss": loss_value, "peak_memory_bytes": peak, "peak_memory_kind": peak_kind,
              "no_gradient_modules": no_grad or [], "device": device.type}
    if dist is not None:
        result["distributed"] = {"world_size": dist.world, "backend": dist.backend, "per_device_batch_size": dist.batch,
                                 "per_device_grad_accum": dist.accum}
    if main:
        doc = finish(out, peft_model, settings, structure, allocation, data_info, precision=precision, result=result)
    if dist is not None:
        dist.barrier()  # cmba.json is written before any rank reports success
        if not main:
            doc = json.loads((out / "cmba.json").read_text())
    if main and not settings.keep_checkpoints:
        checkpoint.remove_all(out)
    if keep is not None:
        keep.update(model=peft_model, processor=processor, allocation=allocation)
    log(f"adapter written to {out} ({allocation.total:,} trainable parameters, {max_steps} steps, "
        f"{train_time:.1f} s, final loss {loss_value:.4f})")
    return doc


def _index(k: int, n: int, seed: int) -> int:
    epoch, pos = divmod(k, n)
    return sample_order(n, seed, epoch)[pos]


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines past the checkpoint we resume from (they will be produced again)."""
    runs.truncate_metrics(path.parent, step=step)


def _progress(enabled: bool, start: int, total: int, name: str):
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=name, unit="step", file=sys.stderr, dynamic_ncols=True)


def _settings_doc(s: TrainSettings) -> dict:
    doc = {}
    for f in dataclasses.fields(s):
        v = getattr(s, f.name)
        doc[f.name] = v if isinstance(v, str | int | float | bool | type(None) | dict | list | tuple) else repr(v)
    return doc


def finish(out: Path, peft_model, settings, structure, allocation, data_info, *, precision, result) -> dict:
    """Adapter files into `out`, then cmba.json atomically (the completion marker)."""
    import shutil
    from datetime import datetime, timezone

    source, hub_id = model_source(structure)
    peft_model.peft_config["default"].base_model_name_or_path = hub_id or source
    staging = out / f".final-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    peft_model.save_pretrained(staging, safe_serialization=True)
    for fname in runs.ADAPTER_FILES:
        os.replace(staging / fname, out / fname)
    shutil.rmtree(staging, ignore_errors=True)
    doc = runs.AdapterDoc(
        kind="adapter", name=out.name, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        base_model={"id": settings.model, "hub_id": hub_id, "revision": settings.revision,
                    "model_type": structure.model_type, "family": structure.family, "weights": hub_id or source},
        allocation=allocation.to_dict(),
        training={**settings.hyperparameters(), "precision": precision, "max_steps": result["steps"]},
        dataset={k: data_info[k] for k in ("id", "revision", "split", "size", "source_size", "limit", "sample_seed",
                                           "columns")},
        result=result, versions=versions())
    written = runs.write_adapter_doc(out, doc)
    runs.clear_run_info(out)
    return written
