"""Train one LoRA adapter for one allocation (the engine behind `python -m toolkit train` and the job system).

    >>> settings = TrainSettings(model="demo", dataset="synthetic:shapes?n=2000", ratio="1:4:1", budget_rank=8,
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
SIGTERM / SIGUSR2 (cancel, Slurm preemption) save a checkpoint at the next step boundary and raise `Interrupted`
(exit 143, toolkit.outcomes); a step that does not fit raises `OutOfMemory` (exit 3).

`train` runs four named phases: `setup` (settings -> structure, allocation, data, output folder, model; see
toolkit.training.modeling), `resume` (checkpoint -> step, state), `fit` (the loop, toolkit.training.loop) and
`finalize` (result, cmba.json, checkpoints removed). They take the process's distributed context
(toolkit.training.distributed.context()): under torchrun (`python -m toolkit.training.distributed`, several
GPUs) every rank runs the loop on its share of each optimizer step's batch (the global batch stays
batch-size x grad-accum), the LoRA gradients are averaged over ranks before the optimizer step, and only rank 0
writes (metrics, checkpoints, adapter, cmba.json); a single process's context does nothing, so the code is
the same for both.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from toolkit import runs
from toolkit.data.hygiene import trained_on
from toolkit.errors import InputError
from toolkit.training import checkpoint
from toolkit.training.compute import compact_lora_dropout, skip_frozen_backward
from toolkit.training.loop import Progress, _log, _peak_memory, _quiet, fit
from toolkit.training.modeling import (
    apply_lora,
    check_bitsandbytes,
    load_model,
    model_source,
    param_groups,
    quantization_doc,
    quiet_libraries,
    resolve_precision,
)
from toolkit.training.order import DataOrder, token_lengths
from toolkit.training.settings import TrainSettings


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
           "data": {**{k: data_info[k] for k in ("id", "split", "size", "limit", "sample_seed")},
                    **{k: data_info[k] for k in ("holdout", "part") if data_info.get(k) is not None}},
           "training": {k: v for k, v in settings.hyperparameters().items() if k != "checkpoint_every"}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


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

    from toolkit.version import __version__

    out = {"python": platform.python_version(), "cmba": __version__}
    for pkg in ("torch", "transformers", "peft", "accelerate", "datasets", "bitsandbytes", "safetensors"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


# ------------------------------------------------------------------------------------- the phases of train


@dataclass
class Setup:
    """What `setup` prepared for one run: the allocation, the data, the output folder and the model."""

    settings: TrainSettings
    ctx: object
    """toolkit.training.distributed context: SingleProcess or the torchrun rank's DistContext"""
    device: object
    precision: str
    structure: object
    allocation: object
    data: object
    data_info: dict
    out: Path
    name: str
    n: int
    """records in the dataset"""
    per_step: int
    """samples per optimizer step (batch size x grad accum, over all processes)"""
    max_steps: int
    warmup: int
    fingerprint: str
    complete: dict | None = None
    """cmba.json of an output folder that already holds the finished run (nothing below is loaded then)"""
    model: object = None
    """the PEFT model"""
    processor: object = None
    fmt: object = None
    groups: list = field(default_factory=list)
    optimizer: object = None
    order: object = None
    """toolkit.training.order.DataOrder: record of sample k of the run"""


def plan(settings: TrainSettings, *, ctx, log) -> Setup:
    """Settings -> structure, allocation, data, output folder (created or cleared by the main process): everything
    but the model, which `setup` loads and a pack (toolkit.training.pack) loads once for all its arms. A folder
    that already holds the finished run stops here (`complete`)."""
    from toolkit.data.sources import load_vqa
    from toolkit.paths import adapters_dir

    device = ctx.device
    precision = resolve_precision(settings.precision, device)
    if settings.quantize == "4bit":
        check_bitsandbytes(device)

    allocation = settings.allocation()  # computed once per settings object (the CLI's check computed it already)
    structure = settings.structure
    data = load_vqa(settings.dataset, split=settings.split, limit=settings.limit, columns=settings.columns,
                    image_dir=settings.image_dir, revision=settings.dataset_revision, config=settings.dataset_config,
                    sample_seed=settings.sample_seed, holdout=settings.holdout, part="train",
                    images_anywhere=settings.images_anywhere)
    data_info = data.info.to_dict()

    name = settings.name or default_name(settings, allocation)
    out = Path(settings.output) if settings.output else adapters_dir() / name
    ctx.run_on_main(lambda: prepare_output(out, settings))  # every process stops on the main one's refusal

    n = len(data)
    per_step = settings.batch_size * settings.grad_accum
    max_steps = settings.max_steps or max(1, math.ceil((settings.epochs or 1.0) * n / per_step))
    run = Setup(settings=settings, ctx=ctx, device=device, precision=precision, structure=structure,
                allocation=allocation, data=data, data_info=data_info, out=out, name=out.name, n=n, per_step=per_step,
                max_steps=max_steps,
                warmup=max(1, round(settings.warmup_ratio * max_steps)) if settings.warmup_ratio > 0 else 0,
                fingerprint=fingerprint(settings, allocation, data_info))
    if runs.is_complete(out):  # --resume of a finished run: nothing to do
        log(f"{out} is already complete")
        run.complete = runs.read_adapter_doc(out).to_dict()
    return run


def setup(settings: TrainSettings, *, ctx, log) -> Setup:
    """`plan`, then the model with its LoRA, the batch builder, the data order and the optimizer."""
    import torch

    from toolkit.data.prompting import VQAFormatter

    run = plan(settings, ctx=ctx, log=log)
    if run.complete is not None:
        return run
    torch.manual_seed(settings.seed)
    model, run.processor = load_model(run.structure, precision=run.precision, quantize=settings.quantize,
                                      device=run.device, revision=settings.revision)
    run.model = apply_lora(model, run.allocation, lora_dropout=settings.lora_dropout,
                           quantized=settings.quantize == "4bit", gradient_checkpointing=settings.gradient_checkpointing)
    if run.precision == "fp32":  # no autocast: the dropout's mask is kept as bytes and its dropped copy recomputed
        compact_lora_dropout(run.model)
    skipped = skip_frozen_backward(run.model, run.structure, run.allocation)
    if skipped:
        log(f"no autograd through {', '.join(skipped)} (no LoRA there)")
    run.fmt = VQAFormatter.for_model(run.processor, model)
    run.order = DataOrder(n=run.n, seed=settings.seed, per_step=run.per_step,
                          lengths=token_lengths(run.fmt, run.data) if settings.group_by_length and run.per_step > 1
                          else None)
    run.groups = param_groups(run.model, run.allocation, settings)
    run.optimizer = torch.optim.AdamW(run.groups, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    return run


def resume(run: Setup, *, log) -> Progress:
    """With --resume, the newest valid checkpoint -> adapter and optimizer state, step, train time; then the
    same starting weights on every process, the metrics cut back to that step, and run.json written."""
    from peft import set_peft_model_state_dict

    settings, out = run.settings, run.out
    progress = Progress()
    found = checkpoint.restore(out, run.optimizer, fingerprint=run.fingerprint, max_steps=run.max_steps,
                               log=log) if settings.resume else None
    if found is not None:
        last, adapter, state = found
        set_peft_model_state_dict(run.model, adapter)
        progress = Progress(step=state["step"], train_time_s=state["train_time_s"],
                            no_gradient_modules=state.get("no_gradient_modules"))
        log(f"resuming {run.name} from step {progress.step}/{run.max_steps} ({last.name})")
    run.ctx.broadcast_params(p for g in run.groups for p in g["params"])
    if run.ctx.main:
        runs.truncate_metrics(out, step=progress.step)
        runs.write_run_info(out, runs.RunInfo(fingerprint=run.fingerprint, max_steps=run.max_steps,
                                              settings=_settings_doc(settings), dataset=run.data_info,
                                              started=time.time()))
    return progress


def finalize(run: Setup, progress: Progress, *, log, keep: dict | None = None) -> dict:
    """The result into cmba.json (written by the main process, read by the others), checkpoints removed."""
    settings, ctx, out, max_steps, train_time = run.settings, run.ctx, run.out, run.max_steps, progress.train_time_s
    peak, peak_kind = _peak_memory(run.device)
    result = {"steps": max_steps, "train_time_s": round(train_time, 3),
              "samples_per_s": round(max_steps * run.per_step / train_time, 3) if train_time else None,
              "final_loss": progress.loss, "peak_memory_bytes": peak, "peak_memory_kind": peak_kind,
              "no_gradient_modules": progress.no_gradient_modules or [], "device": run.device.type}
    if (distributed := ctx.describe()) is not None:
        result["distributed"] = distributed
    doc = None
    if ctx.main:  # what it trained on first: cmba.json, the completion marker, comes last
        seen = trained_on(run.data)
        runs.write_trained_on(out, seen.to_json())
        doc = finish(out, run.model, settings, run.structure, run.allocation,
                     {**run.data_info, "trained_on": seen.summary()}, precision=run.precision, result=result)
    ctx.barrier()  # cmba.json is written before any process reports success
    if doc is None:
        doc = runs.read_adapter_doc(out).to_dict()
    if ctx.main and not settings.keep_checkpoints:
        checkpoint.remove_all(out)
    if keep is not None:
        keep.update(model=run.model, processor=run.processor, allocation=run.allocation)
    log(f"adapter written to {out} ({run.allocation.total:,} trainable parameters, {max_steps} steps, "
        f"{train_time:.1f} s, final loss {progress.loss:.4f})")
    return doc


def train(settings: TrainSettings, *, log=_log, stop_after: int | None = None, keep: dict | None = None) -> dict:
    """Run (or resume) one training; returns the cmba.json document.

    `stop_after`: stop after that many optimizer steps with a checkpoint, as a signal would (tests, demos).
    `keep`: a dict that receives the trained in-memory "model" (PEFT) and "processor" (tests, notebooks).
    """
    from toolkit.training import distributed

    quiet_libraries()
    ctx = distributed.context()
    ctx.plan_batches(settings.batch_size, settings.grad_accum)
    log = log if ctx.main else _quiet
    run = setup(settings, ctx=ctx, log=log)
    if run.complete is not None:
        return run.complete
    progress = resume(run, log=log)
    progress = fit(run, progress, log=log, stop_after=stop_after)
    return finalize(run, progress, log=log, keep=keep)


def _settings_doc(s: TrainSettings) -> dict:
    return s.to_dict()


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
        training={**settings.hyperparameters(), "precision": precision, "max_steps": result["steps"],
                  **({"quantization": q} if (q := quantization_doc(settings.quantize)) else {}),
                  **({"allow_budget_error": True} if settings.allow_budget_error else {})},
        dataset={**{k: data_info[k] for k in ("id", "revision", "split", "size", "source_size", "limit",
                                              "sample_seed", "columns")},
                 **{k: data_info[k] for k in ("holdout", "part", "trained_on") if data_info.get(k) is not None}},
        result=result, versions=versions())
    written = runs.write_adapter_doc(out, doc)
    runs.clear_run_info(out)
    return written
