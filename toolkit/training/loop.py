"""The training loop: `fit`, the phase of `train` (toolkit.training.engine) between resume and finish.

    progress = fit(run, progress, log=log)     # run: engine.Setup; progress: where resume left the run
    progress.step, progress.loss               # max_steps, the last step's loss

One optimizer step: the learning rate of the schedule (`lr_factor`: linear warm-up, then cosine), the
accumulated micro-batches of this process (`ctx.micro_batch`; sample k of the run is `run.order.index(k)`:
`sample_order(N, seed, epoch)[k % N]`, length-grouped by toolkit.training.order, so a resumed run sees exactly
the batches an uninterrupted one would), the loss from logits on labelled positions only (training.compute),
the gradients averaged over the processes (`ctx.reduce_grads`, nothing for one process), after the first
step the check for adapted modules without a gradient, clipping, the optimizer step, one metrics line.
A checkpoint every `checkpoint_every` steps (main process only), and at the step boundary after a
SIGTERM / SIGUSR2 (or `stop_after` steps), after which `Interrupted` is raised (exit 143, resumable).
The distributed context (toolkit.training.distributed) makes the same loop serve one process and torchrun.
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass

from toolkit import runs
from toolkit.errors import TrainingDiverged
from toolkit.outcomes import Interrupted, OutOfMemory, Reason
from toolkit.progressbar import Bar
from toolkit.training import checkpoint
from toolkit.training.compute import training_loss
from toolkit.training.modeling import modules_without_gradient


@dataclass
class Progress:
    """How far a run is: what resume finds in a checkpoint, and what `fit` leaves for the finish."""

    step: int = 0
    """optimizer steps done"""
    train_time_s: float = 0.0
    no_gradient_modules: list | None = None
    """adapted modules that got no gradient in the first step (None: not checked yet)"""
    loss: float = float("nan")
    """loss of the last step run by this process"""


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


def _step_loss(run, step: int, *, autocast_dtype, scaler) -> float:
    """Forward and backward of this process's micro-batches of optimizer step `step`; their summed loss."""
    import torch

    s, ctx, device = run.settings, run.ctx, run.device
    loss_sum = 0.0
    for micro in range(ctx.accum):
        first, size = ctx.micro_batch(step, micro, s.batch_size, s.grad_accum)
        records = [run.data[run.order.index(k)] for k in range(first, first + size)]
        batch = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in run.fmt.train_batch(records).items()}
        try:
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss = training_loss(run.model, batch) / ctx.accum  # LM head on answer positions only
            (scaler.scale(loss) if scaler else loss).backward()
        except torch.OutOfMemoryError as exc:
            raise OutOfMemory(f"{Reason.OUT_OF_MEMORY}: step {step + 1} at batch size {s.batch_size} "
                              f"({str(exc).splitlines()[0]}); lower --batch-size, raise --grad-accum, "
                              f"or use --gradient-checkpointing / --quantize 4bit") from None
        loss_sum += loss.item()
    return loss_sum


def _optimizer_step(run, params: list, scaler) -> None:
    import torch

    if scaler:
        scaler.unscale_(run.optimizer)
    if run.settings.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, run.settings.max_grad_norm)
    if scaler:
        scaler.step(run.optimizer)
        scaler.update()
    else:
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)


def check_finite(params: list, loss: float, step: int, *, scaled: bool) -> None:
    """Stop at the first step whose loss or weights are NaN / infinite (fp16's scaler skips such steps itself, so
    only its weights are checked); nothing non-finite is ever checkpointed or written as an adapter."""
    import torch

    if not scaled and not math.isfinite(loss):
        raise TrainingDiverged(f"training: the loss is {loss} at step {step}; lower --lr or --weight-decay, or "
                               f"use --precision fp32 (no adapter written)")
    if not params:
        return
    norms = torch._foreach_norm([p.detach() for p in params])  # one fused reduction over every LoRA tensor
    if not bool(torch.isfinite(torch.stack([n.float().to(norms[0].device) for n in norms])).all()):
        raise TrainingDiverged(f"training: the adapter weights are NaN or infinite after step {step}; lower --lr "
                               f"or --weight-decay (no adapter written)")


def fit(run, progress: Progress, *, log=_log, stop_after: int | None = None) -> Progress:
    """Train `run` (an engine.Setup) from `progress.step` to its max_steps; returns the progress at the end.

    Raises `Interrupted` after saving a checkpoint when a signal arrives (or after `stop_after` steps) and
    `OutOfMemory` when a step does not fit.
    """
    import torch
    from peft import get_peft_model_state_dict

    s, ctx, device, max_steps = run.settings, run.ctx, run.device, run.max_steps
    params = [p for g in run.groups for p in g["params"]]
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(run.precision)
    scaler = torch.amp.GradScaler("cuda") if run.precision == "fp16" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run.model.train()
    start, train_time, no_grad, loss_value = progress.step, progress.train_time_s, progress.no_gradient_modules, progress.loss
    latest: dict = {}  # the last step's figures, for the plain log lines (not a TTY, or --no-progress)
    bar = Bar(total=max_steps, initial=start, desc=run.name, unit="step", enabled=s.progress and ctx.main, log=log,
              line=lambda done, total, _: (f"step {done}/{total} loss {latest['loss']:.4f} lr {latest['lr']:.2e} "
                                           f"{latest['samples_per_s']:.1f} samples/s eta {latest['eta_s']:.0f}s"))
    t_run = time.perf_counter()
    with _Signals() as signals, open(runs.metrics_path(run.out) if ctx.main else os.devnull, "a") as metrics:
        for step in range(start, max_steps):
            t0 = time.perf_counter()
            for g in run.optimizer.param_groups:
                g["lr"] = g["base_lr"] * lr_factor(step, max_steps, run.warmup)
            loss_sum = _step_loss(run, step, autocast_dtype=autocast_dtype, scaler=scaler)
            ctx.reduce_grads(params)  # what DDP would do: average the gradients, and report the global loss
            loss_sum = ctx.mean(loss_sum)
            if step == 0 and no_grad is None:
                no_grad = modules_without_gradient(run.model)
                if no_grad:
                    log(f"warning: {len(no_grad)} adapted modules received no gradient (budget spent on dead "
                        f"modules): {', '.join(no_grad[:5])}{' ...' if len(no_grad) > 5 else ''}")
            _optimizer_step(run, params, scaler)
            check_finite(params, loss_sum, step + 1, scaled=scaler is not None)
            loss_value = loss_sum
            train_time += time.perf_counter() - t0
            done = step + 1
            elapsed = time.perf_counter() - t_run
            rate = (done - start) * run.per_step / elapsed if elapsed > 0 else 0.0
            eta = (max_steps - done) * elapsed / (done - start)
            line = {"step": done, "max_steps": max_steps, "epoch": done * run.per_step / run.n, "loss": loss_value,
                    "lr": run.optimizer.param_groups[0]["lr"], "samples_per_s": rate, "elapsed_s": train_time,
                    "eta_s": eta, "time": time.time(),
                    "cpu_s": round(time.process_time(), 3)}  # CPU seconds of this process: comparable on a busy machine
            metrics.write(json.dumps(line) + "\n")
            metrics.flush()
            latest.update(line)
            bar.update(1, loss=f"{loss_value:.4f}")
            cause = signals.received or ("stop_after" if stop_after is not None and done - start >= stop_after
                                         else None)
            interrupt = ctx.any(bool(cause))  # every process stops at the same step, whichever got the signal
            if ctx.main and (done % s.checkpoint_every == 0 or (interrupt and done < max_steps)):
                state = {"fingerprint": run.fingerprint, "train_time_s": train_time, "no_gradient_modules": no_grad,
                         "max_steps": max_steps}
                checkpoint.save(run.out, done, adapter=get_peft_model_state_dict(run.model), optimizer=run.optimizer,
                                state=state)
            if interrupt and done < max_steps:
                bar.close()
                ctx.barrier()  # the main process's checkpoint is complete before any process exits
                raise Interrupted(f"interrupted by {cause or 'a signal'} at step {done}/{max_steps}; "
                                  f"checkpoint saved, continue with --resume")
    bar.close()
    return Progress(step=max_steps, train_time_s=train_time, no_gradient_modules=no_grad, loss=loss_value)
