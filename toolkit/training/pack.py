"""Packed training: the arms of a study that share a base model train in one process on one copy of it (#28).

    settings = [TrainSettings(model="demo", dataset="synthetic:shapes?n=2000", ratio=r, budget_rank=8, seed=s)
                for r in ("1:1:1", "1:4:1") for s in (0, 1)]
    result = train_pack(settings)       # one base model, four adapters, four ordinary run folders
    result.mode, result.reason          # "fused" (or "sequential" / "single"), and why it is not fused
    result.docs                         # each arm's cmba.json document, as `engine.train` returns it

An arm is exactly what `engine.train(settings)` would train alone: the engine's own `plan` (allocation, data,
output folder), its own PEFT adapter (its per-module ranks and alpha, initialised from its seed with the same
draws as a single run: `torch.manual_seed(seed)` then PEFT's initialisation), its own optimizer, schedule,
data order, RNG stream (toolkit.training.fused_lora.RngStream: its dropout masks) and checkpoints, and
`engine.finalize` writes its run folder (adapter files, cmba.json, metrics, trained_on). The base is loaded once.
Arms may differ in allocation, seed, learning rates, batch size, accumulation and length; they share the model,
its revision, precision, quantization and gradient checkpointing. An arm that reaches its last step leaves the
pack; the others go on. So does an arm that `leave` names (a cancelled arm: checkpointed, its run unfinished).

**Out of memory**: a fused step that runs out of memory is undone and redone with its stacks split in two
(`stack_rows` halved), then the pack goes on in the smaller forwards; the arms' numbers do not change (stacks
are exact). Only with one arm per forward is it the job's out-of-memory failure.

**Fused** (the default): each optimizer step stacks the arms' micro-batches into one batch
(`fused_lora.stack_batches`), every frozen Linear runs once over it and each arm's LoRA delta is added on its own
slice (`fused_lora.FusedLora`), the loss is computed per arm on its rows (`compute.training_losses`) and one
backward of their sum gives every arm exactly its own gradients. An arm's loss curve and weights equal its
single run's up to float rounding (tests/training/test_pack.py: within 1e-5 in fp32 on every tiny family; what
differs is the summation order of padded attention rows and larger matmuls). The stacked batch's activations
are the sum of the arms': `stack_rows` cuts the arms into stacks of at most that many rows, run one after
another in the step, to bound them (bench/RESULTS.md, "Packed training").

**Sequential** (the fallback): the arms run one after another on the same base copy, each micro-batch exactly as
a single run computes it, with the arm's RNG stream installed. It is chosen, with its reason logged and returned,
where fusing cannot give each arm its single run's numbers:
- the frozen base draws its own dropout masks in training (BLIP-2: Q-Former and OPT / T5 dropout): one draw over
  the stacked batch cannot give each arm the masks its own RNG stream would give;
- the language model is an encoder-decoder (BLIP-2 with Flan-T5: its loss is the decoder's, not cut per arm here);
- gradient checkpointing (backward recomputes the forward outside the arms' RNG streams);
- a batch the stacker or a layer cannot cut per arm (`FusionError` at any step: that step is redone
  sequentially from the arms' saved RNG states, and the pack stays sequential).
One arm alone is "single": the sequential path, which is a single run.

Signals (SIGTERM / SIGUSR2) and `stop_after` checkpoint every unfinished arm at the step boundary and raise
`Interrupted`; `--resume` settings continue each arm from its own newest valid checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from toolkit import runs
from toolkit.errors import InputError
from toolkit.outcomes import Interrupted, OutOfMemory, Reason
from toolkit.training import checkpoint
from toolkit.training.fused_lora import FusedLora, FusionError, RngStream, single_layout, stack_batches
from toolkit.training.loop import Progress, _log, _optimizer_step, _Signals, check_finite, lr_factor

SHARED = ("model", "revision", "precision", "quantize", "gradient_checkpointing", "patterns")
"""settings every arm of a pack must share: they define the one base model in memory"""


@dataclass
class Arm:
    """One arm of a pack: the engine's plan of its run, its adapter on the shared model, its RNG stream."""

    run: object
    """engine.Setup from `engine.plan`, with its optimizer, groups and data order filled in by the pack"""
    adapter: str
    """its PEFT adapter name on the shared model ("default" for the first arm)"""
    rng: RngStream
    progress: Progress = field(default_factory=Progress)
    params: list = field(default_factory=list)
    scaler: object = None
    start: int = 0
    """the step this process started it at (0, or its resumed checkpoint's)"""
    left: str | None = None
    """why it left the pack before its last step (`train_pack(leave=...)`), else None"""
    saved_step: int | None = None
    """the step of its newest checkpoint written in this process"""

    @property
    def dropout(self) -> float:
        return self.run.settings.lora_dropout

    @property
    def accum(self) -> int:
        return self.run.settings.grad_accum

    @property
    def done(self) -> bool:
        return self.progress.step >= self.run.max_steps

    @property
    def active(self) -> bool:
        return not self.done and self.left is None


@dataclass
class PackResult:
    """What `train_pack` returns."""

    docs: list[dict | None]
    """each arm's cmba.json document, in the order of the settings (None: it left the pack)"""
    mode: str
    """"fused", "sequential" or "single" (one arm to train)"""
    reason: str | None
    """why the pack is not fused (None when fused or single)"""
    arms: int
    """arms trained in this process (arms already complete are not counted)"""
    train_time_s: float
    samples_per_s: float | None
    """samples of all arms per second of the pack's training time"""
    left: dict[str, str] = field(default_factory=dict)
    """{run name: why} of the arms that left the pack (or never joined it) unfinished"""


@dataclass
class RungArm:
    """One arm at a rung of a pack (`train_pack(at_rung=...)`)."""

    settings: object
    snapshot: Path
    """its adapter at the rung's step: a complete run folder (PEFT files + cmba.json)"""
    evaluating: object
    """() -> context manager: the shared PEFT model in eval mode with this arm's adapter alone active"""
    processor: object


class _ArmModel:
    """One arm's adapter seen as the single-adapter PEFT model `engine.finish` saves (as "default")."""

    def __init__(self, peft_model, adapter: str):
        self.model, self.adapter = peft_model, adapter
        self.peft_config = {"default": peft_model.peft_config[adapter]}

    def save_pretrained(self, path, safe_serialization: bool = True) -> None:
        path = Path(path)
        self.model.save_pretrained(path, selected_adapters=[self.adapter], safe_serialization=safe_serialization)
        if self.adapter != "default":  # PEFT writes a non-default adapter into a subfolder of its name
            for f in (path / self.adapter).iterdir():
                os.replace(f, path / f.name)


# ------------------------------------------------------------------------------------- building the pack


def _check_compatible(settings_list: list) -> None:
    if not settings_list:
        raise InputError("pack: no arms to train")
    first = settings_list[0]
    for s in settings_list[1:]:
        for key in SHARED:
            if getattr(s, key) != getattr(first, key):
                raise InputError(f"pack: every arm must share --{key.replace('_', '-')} (one base model in memory); "
                                 f"got {getattr(first, key)!r} and {getattr(s, key)!r}")


def _adapter_params(peft_model, adapter: str) -> list[tuple[str, object]]:
    """(name, parameter) of one adapter's trainable tensors, in the model's order."""
    marks = (f".lora_A.{adapter}.", f".lora_B.{adapter}.", f".modules_to_save.{adapter}.")
    return [(n, p) for n, p in peft_model.named_parameters() if any(m in n for m in marks)]


def base_dropout(model) -> list[str]:
    """Modules of the frozen base that draw dropout masks in training (LoRA's own dropout aside)."""
    import torch

    found = []
    for name, module in model.named_modules():
        if "lora_" in name:
            continue
        if isinstance(module, torch.nn.Dropout) and module.p > 0:
            found.append(f"{name} p={module.p:g}")
        for attr, value in vars(module).items():
            if "drop" in attr and isinstance(value, float) and value > 0:
                found.append(f"{name}.{attr}={value:g}")
    return found


def fusion_blocker(peft_model, arms: list[Arm]) -> str | None:
    """Why this pack cannot be fused (None when it can); see the module docstring."""
    from toolkit.data.families import is_encoder_decoder

    base = peft_model.get_base_model()
    if is_encoder_decoder(base.config):
        return "encoder-decoder language model: its loss is not computed per labelled decoder position here"
    drops = base_dropout(base)
    if drops:
        return (f"the frozen base draws its own dropout masks in training ({', '.join(drops[:3])}"
                f"{', ...' if len(drops) > 3 else ''}): one draw over the stacked batch cannot give each arm its own "
                f"RNG stream's masks")
    if arms[0].run.settings.gradient_checkpointing:
        return "gradient checkpointing recomputes the forward in backward, outside the arms' RNG streams"
    return None


def _build(plans: list, *, log):
    """The shared model with one adapter per arm (each initialised as its single run would be), and the arms."""
    import torch
    from peft import LoraConfig

    from toolkit.training.compute import compact_lora_dropout, skip_frozen_backward
    from toolkit.training.modeling import apply_lora, load_model, param_groups

    first = plans[0]
    s0 = first.settings
    before = torch.get_rng_state()
    model, processor = load_model(first.structure, precision=first.precision, quantize=s0.quantize,
                                  device=first.device, revision=s0.revision)
    if not torch.equal(before, torch.get_rng_state()):
        log("warning: loading the model drew random numbers; the arms' LoRA initialisation may differ from their "
            "single runs'")
    arms: list[Arm] = []
    peft_model = None
    for i, run in enumerate(plans):
        s = run.settings
        torch.manual_seed(s.seed)  # as `engine.setup`: the seed, then PEFT's initialisation of this adapter
        if peft_model is None:
            peft_model = apply_lora(model, run.allocation, lora_dropout=s.lora_dropout, quantized=s.quantize == "4bit",
                                    gradient_checkpointing=s.gradient_checkpointing)
            adapter = "default"
        else:
            adapter = f"arm{i}"
            peft_model.add_adapter(adapter, LoraConfig(**{**run.allocation.lora_config_dict(),
                                                          "lora_dropout": s.lora_dropout}))
            count = sum(p.numel() for _, p in _adapter_params(peft_model, adapter))
            if count != run.allocation.total:
                raise InputError(f"allocation: PEFT makes {count:,} parameters trainable for {run.name} but the "
                                 f"allocation predicts {run.allocation.total:,}")
        arms.append(Arm(run=run, adapter=adapter, rng=RngStream(first.device)))
    for arm in arms:  # PEFT leaves only the active adapter trainable; every arm trains here
        named = _adapter_params(peft_model, arm.adapter)
        for _, p in named:
            p.requires_grad_(True)
        arm.run.groups = param_groups(SimpleNamespace(named_parameters=lambda named=named: iter(named)),
                                      arm.run.allocation, arm.run.settings)
        arm.params = [p for g in arm.run.groups for p in g["params"]]
        arm.run.optimizer = torch.optim.AdamW(arm.run.groups, lr=arm.run.settings.learning_rate,
                                              weight_decay=arm.run.settings.weight_decay)
        if first.precision == "fp16":
            arm.scaler = torch.amp.GradScaler("cuda")
    if first.precision == "fp32":
        compact_lora_dropout(peft_model)
    every = SimpleNamespace(modules=[m for a in arms for m in a.run.allocation.modules])
    skipped = skip_frozen_backward(peft_model, first.structure, every)  # frozen in every arm
    if skipped:
        log(f"no autograd through {', '.join(skipped)} (no LoRA there in any arm)")
    return peft_model, processor, arms


def _order(arm: Arm, fmt) -> None:
    from toolkit.training.order import DataOrder, token_lengths

    run = arm.run
    grouped = run.settings.group_by_length and run.per_step > 1
    run.fmt = fmt
    run.order = DataOrder(n=run.n, seed=run.settings.seed, per_step=run.per_step,
                          lengths=token_lengths(fmt, run.data) if grouped else None)


def _resume(arm: Arm, peft_model, *, log) -> None:
    """As `engine.resume`, for one arm: its newest valid checkpoint -> its adapter, optimizer and RNG stream."""
    from peft import set_peft_model_state_dict

    from toolkit.training.engine import _settings_doc

    run = arm.run
    found = checkpoint.restore(run.out, run.optimizer, fingerprint=run.fingerprint, max_steps=run.max_steps,
                               log=log) if run.settings.resume else None
    if found is not None:
        last, adapter, state = found
        arm.rng = RngStream(run.device)  # checkpoint.restore set the global generators to the arm's saved ones
        set_peft_model_state_dict(peft_model, adapter, adapter_name=arm.adapter)
        arm.progress = Progress(step=state["step"], train_time_s=state["train_time_s"],
                                no_gradient_modules=state.get("no_gradient_modules"))
        log(f"resuming {run.name} from step {arm.progress.step}/{run.max_steps} ({last.name})")
    arm.start = arm.progress.step
    runs.truncate_metrics(run.out, step=arm.progress.step)
    runs.write_run_info(run.out, runs.RunInfo(fingerprint=run.fingerprint, max_steps=run.max_steps,
                                              settings=_settings_doc(run.settings), dataset=run.data_info,
                                              started=time.time()))


# ------------------------------------------------------------------------------------- one optimizer step


def _micro_batch(arm: Arm, micro: int) -> dict:
    run = arm.run
    first, size = run.ctx.micro_batch(arm.progress.step, micro, run.settings.batch_size, run.settings.grad_accum)
    return run.fmt.train_batch([run.data[run.order.index(k)] for k in range(first, first + size)])


def _to(batch: dict, device) -> dict:
    return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}


def _scaled(arm: Arm, loss):
    return arm.scaler.scale(loss) if arm.scaler else loss


def stacks(arms: list[Arm], stack_rows: int | None) -> list[list[Arm]]:
    """The arms cut, in order, into stacks of at most `stack_rows` batch rows (an arm larger than that alone)."""
    if stack_rows is None:
        return [arms]
    out: list[list[Arm]] = []
    for a in arms:
        rows = a.run.settings.batch_size
        if out and sum(b.run.settings.batch_size for b in out[-1]) + rows <= stack_rows:
            out[-1].append(a)
        else:
            out.append([a])
    return out


def _fused_step(arms: list[Arm], model, fused: FusedLora, *, pad_id: int, autocast, stack_rows: int | None) -> dict:
    """One optimizer step's forward and backward of the arms, stacked; {adapter: summed micro-batch loss}."""
    from toolkit.training.compute import training_losses

    sums = {a.adapter: 0.0 for a in arms}
    device = arms[0].run.device
    for micro in range(max(a.accum for a in arms)):
        for part in stacks([a for a in arms if micro < a.accum], stack_rows):
            stacked, layout = stack_batches([_micro_batch(a, micro) for a in part], part, pad_id=pad_id,
                                            config=model.get_base_model().config)
            try:
                with fused.running(layout), autocast():
                    losses = training_losses(model, _to(stacked, device), layout.rows)
            except ValueError as exc:  # the model or the loss refused the stacked batch
                raise FusionError(str(exc).splitlines()[0]) from None
            losses = [loss / a.accum for a, loss in zip(part, losses)]
            sum(_scaled(a, loss) for a, loss in zip(part, losses)).backward()
            for a, loss in zip(part, losses):
                sums[a.adapter] += loss.item()
    return sums


def _sequential_step(arms: list[Arm], model, fused: FusedLora, *, autocast) -> dict:
    """Each arm's micro-batches alone, exactly as a single run computes them, with its RNG stream installed."""
    from toolkit.training.compute import training_loss

    sums = {}
    for a in arms:
        total = 0.0
        with a.rng.installed():
            for micro in range(a.accum):
                batch = _to(_micro_batch(a, micro), a.run.device)
                with fused.running(single_layout(batch, a)), autocast():
                    loss = training_loss(model, batch) / a.accum
                _scaled(a, loss).backward()
                total += loss.item()
        sums[a.adapter] = total
    return sums


def _checkpoint(a: Arm, peft_model) -> None:
    """The arm's state at its current step, as `engine` checkpoints a single run (its RNG state: its stream)."""
    from peft import get_peft_model_state_dict

    run, p = a.run, a.progress
    with a.rng.installed():
        checkpoint.save(run.out, p.step, adapter=get_peft_model_state_dict(peft_model, adapter_name=a.adapter),
                        optimizer=run.optimizer,
                        state={"fingerprint": run.fingerprint, "train_time_s": p.train_time_s,
                               "no_gradient_modules": p.no_gradient_modules, "max_steps": run.max_steps})
    a.saved_step = p.step


def _leave(a: Arm, why: str, peft_model, *, log) -> None:
    """The arm leaves the pack at this step boundary: checkpointed (so it can be resumed), its optimizer state and
    gradients freed (its LoRA weights stay on the shared model until the pack ends, unused)."""
    if a.progress.step > a.start and a.saved_step != a.progress.step:
        _checkpoint(a, peft_model)
    a.left = why
    a.run.optimizer.state.clear()
    for p in a.params:
        p.grad = None
        p.requires_grad_(False)
    log(f"{a.run.name} leaves the pack at step {a.progress.step}/{a.run.max_steps}: {why}"
        + (" (checkpointed)" if a.progress.step > a.start else ""))


def _snapshot(a: Arm, peft_model, step: int, *, log) -> Path:
    """The arm's adapter at `step` of its schedule, as a complete run folder beside its run (as `rung.train_until`
    writes one: trained_on is the whole run's questions, a superset of what it saw by then)."""
    from toolkit.data.hygiene import trained_on
    from toolkit.training.engine import finish

    run, p = a.run, a.progress
    snap = runs.snapshot_dir(run.out, step)
    if runs.is_complete(snap):
        return snap
    snap.mkdir(parents=True, exist_ok=True)
    seen = trained_on(run.data)
    runs.write_trained_on(snap, seen.to_json())
    result = {"steps": step, "schedule_steps": run.max_steps, "train_time_s": round(p.train_time_s, 3),
              "final_loss": p.loss, "no_gradient_modules": p.no_gradient_modules or [], "device": run.device.type,
              "snapshot_of": str(run.out)}
    finish(snap, _ArmModel(peft_model, a.adapter), run.settings.replace(output=str(snap), keep_checkpoints=False),
           run.structure, run.allocation, {**run.data_info, "trained_on": seen.summary()}, precision=run.precision,
           result=result)
    log(f"snapshot of {run.name} at step {step}/{run.max_steps} written to {snap}")
    return snap


def _evaluating(peft_model, adapter: str, arms: list[Arm]):
    """The shared model in eval mode with one arm's adapter alone active (PEFT's own forward: no stacked layout);
    afterwards training mode, the previous active adapter and every training arm's parameters trainable again
    (PEFT's set_adapter leaves only the active adapter trainable)."""
    import contextlib

    @contextlib.contextmanager
    def use():
        previous = peft_model.active_adapter
        peft_model.set_adapter(adapter)
        peft_model.eval()
        try:
            yield peft_model
        finally:
            peft_model.set_adapter(previous)
            peft_model.train()
            for a in arms:
                if a.active:
                    for p in a.params:
                        p.requires_grad_(True)

    return use


def _rewind(arms: list[Arm], saved: dict) -> None:
    """Undo a step that did not complete: each arm's RNG stream as it was before it, no gradients kept."""
    for a in arms:
        a.rng.restore(saved[a.adapter])
        a.run.optimizer.zero_grad(set_to_none=True)


def _free(device) -> None:
    """Give back what a failed forward left (its activations are garbage once the exception is gone)."""
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _no_gradient(peft_model, adapter: str) -> list[str]:
    """As modeling.modules_without_gradient, for one adapter of the pack."""
    dead = []
    for name, module in peft_model.named_modules():
        lora_b = getattr(module, "lora_B", None)
        if lora_b is None or not hasattr(lora_b, "keys") or adapter not in lora_b:
            continue
        grad = lora_b[adapter].weight.grad
        if grad is None or not bool(grad.abs().sum() > 0):
            dead.append(name.removeprefix("base_model.model."))
    return dead


# ------------------------------------------------------------------------------------- the pack


def train_pack(settings_list: list, *, fuse: bool = True, stack_rows: int | None = None, log=_log,
               stop_after: int | None = None, keep: dict | None = None, leave=None, rungs: tuple[int, ...] = (),
               at_rung=None) -> PackResult:
    """Train every arm of `settings_list` (TrainSettings sharing `SHARED`) in this process on one base model.

    `fuse=False` runs the arms one after another (the sequential path) even where they could be fused.
    `stack_rows`: at most this many batch rows in one fused forward (the arms are cut into stacks run one after
    another; None: every arm in one stack). Activation memory grows with the stack, the gain of fusion with it too.
    `stop_after`: stop after that many pack steps with a checkpoint of every unfinished arm, as a signal would.
    `keep`: receives the shared PEFT "model" (one adapter per arm), "processor" and the arms' "adapters" names.
    `leave(settings) -> reason or None`: asked for every unfinished arm before the pack is built and at every step
    boundary; an arm given a reason leaves the pack there (checkpointed, so `--resume` can continue it later; no
    run folder finished) and the others go on (`PackResult.left`). A cancelled arm of a pack job is one.

    `rungs` (steps before the last) and `at_rung(step, reached) -> {run name: reason}`: when the arms reach a rung,
    each is checkpointed there and its adapter at that step written as a complete snapshot folder
    (toolkit.runs.snapshot_dir, as a halving rung job writes it); `at_rung` gets a `RungArm` per arm (its
    settings, snapshot folder, and `evaluating()`: the shared model in eval mode with that arm's adapter alone
    active, for an evaluation in this process) and returns the arms to drop, which leave the pack there.

    Out of memory in a fused step: the step is undone (each arm's RNG stream and gradients as before it), the
    stacks are split in two (`stack_rows` halved from the largest stack's rows) and the step redone, so the arms
    go on exactly as before, in smaller forwards; with one arm per forward left, it raises OutOfMemory.
    """
    import contextlib
    import functools

    import torch

    from toolkit.data.prompting import VQAFormatter
    from toolkit.training import distributed
    from toolkit.training.engine import finalize, plan
    from toolkit.training.modeling import default_device, quiet_libraries

    quiet_libraries()
    if distributed.from_env() is not None:
        raise InputError("pack: a pack trains in one process; run it without torchrun")
    _check_compatible(settings_list)
    device = default_device()
    plans = []
    for s in settings_list:
        ctx = distributed.SingleProcess(device=device)
        ctx.plan_batches(s.batch_size, s.grad_accum)
        plans.append(plan(s, ctx=ctx, log=log))
    outs = [p.out.resolve() for p in plans]
    if len(set(outs)) != len(outs):
        raise InputError("pack: two arms write the same output folder; give each arm its own --name or --output")
    left = {}
    for p in plans:
        if p.complete is None and leave is not None and (why := leave(p.settings)):
            left[p.name] = why
            log(f"{p.name} is not trained in this pack: {why}")
    todo = [p for p in plans if p.complete is None and p.name not in left]
    if not todo:
        return PackResult(docs=[p.complete for p in plans], mode="single", reason=None, arms=0, train_time_s=0.0,
                          samples_per_s=None, left=left)

    peft_model, processor, arms = _build(todo, log=log)
    fused = FusedLora(peft_model, components={m.name: m.component for m in [*todo[0].structure.modules,
                                                                            *todo[0].structure.dead]})
    fmt = VQAFormatter.for_model(processor, peft_model.get_base_model())
    for arm in arms:
        _order(arm, fmt)
        _resume(arm, peft_model, log=log)
    if len(arms) == 1:
        mode, reason = "single", None
    else:
        reason = "asked not to fuse" if not fuse else fusion_blocker(peft_model, arms)
        mode = "sequential" if reason else "fused"
    log(f"pack of {len(arms)} arms on one {todo[0].structure.model_type} base: {mode}"
        + (f" ({reason})" if reason else ""))

    precision = todo[0].precision
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = functools.partial(torch.autocast, device.type, dtype=dtype) if dtype else contextlib.nullcontext
    pad_id = fmt.tokenizer.pad_token_id
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    peft_model.train()
    pack_time, pack_steps, samples = 0.0, 0, 0
    t_run = time.perf_counter()
    files = {a.adapter: open(runs.metrics_path(a.run.out), "a") for a in arms}  # noqa: SIM115 - closed below
    try:
        with _Signals() as signals:
            while True:
                if leave is not None:
                    for a in arms:
                        if a.active and (why := leave(a.run.settings)):
                            _leave(a, why, peft_model, log=log)
                if not (active := [a for a in arms if a.active]):
                    break
                t0 = time.perf_counter()
                for a in active:
                    for g in a.run.optimizer.param_groups:
                        g["lr"] = g["base_lr"] * lr_factor(a.progress.step, a.run.max_steps, a.run.warmup)
                saved = {a.adapter: a.rng.copy() for a in active}
                while True:
                    try:
                        if mode == "fused":
                            try:
                                sums = _fused_step(active, peft_model, fused, pad_id=pad_id, autocast=autocast,
                                                   stack_rows=stack_rows)
                            except FusionError as exc:  # redo this step one arm after another, from the same state
                                mode, reason = "sequential", f"a batch could not be fused: {exc}"
                                log(f"pack: sequential from step {active[0].progress.step + 1} on ({reason})")
                                _rewind(active, saved)
                                sums = _sequential_step(active, peft_model, fused, autocast=autocast)
                        else:
                            sums = _sequential_step(active, peft_model, fused, autocast=autocast)
                        break
                    except torch.OutOfMemoryError as exc:
                        first_line = str(exc).splitlines()[0] if str(exc) else "out of memory"
                        rows = max(sum(a.run.settings.batch_size for a in part) for part in stacks(active, stack_rows))
                        if mode != "fused" or all(len(part) == 1 for part in stacks(active, stack_rows)):
                            raise OutOfMemory(f"{Reason.OUT_OF_MEMORY}: a pack step of {len(active)} arms, one arm per "
                                              f"forward ({first_line}); lower --batch-size or use a larger device"
                                              ) from None
                        _rewind(active, saved)
                        _free(device)
                        stack_rows = max(1, rows // 2)
                        log(f"pack: out of memory at step {active[0].progress.step + 1} with {rows} rows in one "
                            f"forward; split in two: at most {stack_rows} rows per forward from now on, the step "
                            f"redone from the same state")
                for a in active:
                    if a.progress.step == 0 and a.progress.no_gradient_modules is None:
                        dead = _no_gradient(peft_model, a.adapter)
                        a.progress.no_gradient_modules = dead
                        if dead:
                            log(f"warning: {a.run.name}: {len(dead)} adapted modules received no gradient (budget "
                                f"spent on dead modules): {', '.join(dead[:5])}{' ...' if len(dead) > 5 else ''}")
                    _optimizer_step(a.run, a.params, a.scaler)
                    check_finite(a.params, sums[a.adapter], a.progress.step + 1, scaled=a.scaler is not None)
                step_time = time.perf_counter() - t0
                pack_time += step_time
                pack_steps += 1
                interrupt = signals.received or (stop_after is not None and pack_steps >= stop_after)
                elapsed = time.perf_counter() - t_run
                for a in active:
                    run, p = a.run, a.progress
                    p.step, p.loss = p.step + 1, sums[a.adapter]
                    p.train_time_s += step_time
                    samples += run.per_step
                    line = {"step": p.step, "max_steps": run.max_steps, "epoch": p.step * run.per_step / run.n,
                            "loss": p.loss, "lr": run.optimizer.param_groups[0]["lr"],
                            "samples_per_s": (p.step - a.start) * run.per_step / elapsed if elapsed > 0 else 0.0,
                            "elapsed_s": p.train_time_s, "eta_s": (run.max_steps - p.step) * elapsed / (p.step - a.start),
                            "time": time.time(), "cpu_s": round(time.process_time(), 3)}
                    files[a.adapter].write(json.dumps(line) + "\n")
                    files[a.adapter].flush()
                    if p.step % run.settings.checkpoint_every == 0 or (interrupt and not a.done):
                        _checkpoint(a, peft_model)
                reached = [a for a in active if a.progress.step in rungs and not a.done]
                if reached and at_rung is not None:
                    for a in reached:
                        if a.saved_step != a.progress.step:  # the rung is a resume point, as in a rung job
                            _checkpoint(a, peft_model)
                    drop = at_rung(reached[0].progress.step, [
                        RungArm(settings=a.run.settings, snapshot=_snapshot(a, peft_model, a.progress.step, log=log),
                                evaluating=_evaluating(peft_model, a.adapter, arms), processor=processor)
                        for a in reached])
                    for a in reached:
                        if a.run.name in drop:
                            _leave(a, drop[a.run.name], peft_model, log=log)
                if pack_steps == 1 or pack_steps % 10 == 0 or not any(a.active for a in arms):
                    log(f"pack step {pack_steps}: " + ", ".join(f"{a.run.name} {a.progress.loss:.4f}" for a in active)
                        + f" ({step_time:.2f} s)")
                if interrupt and any(a.active for a in arms):
                    raise Interrupted(f"interrupted by {signals.received or 'stop_after'} after {pack_steps} pack "
                                      f"steps; every unfinished arm is checkpointed, continue with --resume")
    finally:
        for f in files.values():
            f.close()

    docs_by_out = {}
    for a in arms:
        if a.left is not None:
            left[a.run.name] = a.left
            continue
        a.run.model, a.run.processor = _ArmModel(peft_model, a.adapter), processor
        docs_by_out[a.run.out] = finalize(a.run, a.progress, log=log)
    if keep is not None:
        keep.update(model=peft_model, processor=processor, adapters=[a.adapter for a in arms])
    return PackResult(docs=[p.complete if p.complete is not None else docs_by_out.get(p.out) for p in plans],
                      mode=mode, reason=reason, arms=len(arms), train_time_s=round(pack_time, 3),
                      samples_per_s=round(samples / pack_time, 3) if pack_time else None, left=left)
