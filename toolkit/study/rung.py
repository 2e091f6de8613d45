"""One rung of a successive-halving job: train up to a step of the full schedule, snapshot the adapter there.

    python -m toolkit.study.rung --settings-json '<TrainSettings>' --until 100 --snapshot adapters/x-step0000100

The run keeps its full schedule (`max_steps` of the settings, so the learning rate at step s is the one an
uninterrupted run has): training goes from the newest checkpoint of the run folder (`--resume`, always on in
sweeps) to step `until`, saves a checkpoint there, and writes the adapter at that step to `--snapshot` as a
plain, complete adapter folder (PEFT files + cmba.json whose `training.max_steps` is `until` and whose
`result.schedule_steps` is the full schedule), which the rung's evaluate step scores. The next rung resumes
from that checkpoint, so a continued run equals an uninterrupted one. At `until == max_steps` this is an
ordinary `train` (the run folder itself is the final adapter, checkpoints removed).

Exit status as `train` (toolkit.outcomes.ExitCode): 0 done, 2 bad input, 3 out of memory, 143 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from toolkit import runs
from toolkit.errors import CmbaError, InputError
from toolkit.outcomes import ExitCode, Interrupted, OutOfMemory


def _checkpoint_step(out: Path) -> int | None:
    last = runs.latest_checkpoint(out)
    return None if last is None else int(last.name.split("-")[-1])


def train_until(settings, *, until: int, snapshot: str | Path, log=print) -> dict:
    """Train the run of `settings` to step `until` of its schedule and write the snapshot; returns its cmba.json.
    Idempotent: a snapshot already complete is returned as it is."""
    from toolkit.data.hygiene import trained_on
    from toolkit.training import distributed, engine
    from toolkit.training.checkpoint import latest as latest_checkpoint
    from toolkit.training.loop import Progress, fit
    from toolkit.training.modeling import quiet_libraries

    snapshot = Path(snapshot)
    if until > (settings.max_steps or 0):
        raise InputError(f"until: {until} is beyond the run's schedule (max steps {settings.max_steps})")
    if until == settings.max_steps:
        return engine.train(settings, log=log)
    if runs.is_complete(snapshot):
        return runs.read_adapter_doc(snapshot).to_dict()
    if not settings.keep_checkpoints:  # the next rung resumes from the checkpoint at `until`
        settings = settings.replace(keep_checkpoints=True)
    quiet_libraries()
    ctx = distributed.context()
    ctx.plan_batches(settings.batch_size, settings.grad_accum)
    run = engine.setup(settings, ctx=ctx, log=log)
    if run.complete is not None:
        raise InputError(f"snapshot: the run in '{settings.output}' already finished all {settings.max_steps} steps; "
                         f"its step-{until} adapter cannot be made again")
    progress = engine.resume(run, log=log)
    if progress.step > until:
        raise InputError(f"until: the run in '{settings.output}' is already at step {progress.step} > {until}")
    if progress.step < until:
        try:
            fit(run, progress, log=log, stop_after=until - progress.step)
        except Interrupted:
            if _checkpoint_step(run.out) != until:  # a real signal before the rung's end: resumable, exit 143
                raise
        state = runs.read_json(latest_checkpoint(run.out) / runs.CHECKPOINT_STATE, label="checkpoint")
        progress = Progress(step=until, train_time_s=state["train_time_s"],
                                   no_gradient_modules=state.get("no_gradient_modules"),
                                   loss=runs.last_metric(run.out).loss if runs.last_metric(run.out) else None)
    snapshot.mkdir(parents=True, exist_ok=True)
    seen = trained_on(run.data)  # the whole run's questions: a safe superset of what step `until` saw
    runs.write_trained_on(snapshot, seen.to_json())
    result = {"steps": until, "schedule_steps": settings.max_steps, "train_time_s": round(progress.train_time_s, 3),
              "final_loss": progress.loss, "no_gradient_modules": progress.no_gradient_modules or [],
              "device": run.device.type, "snapshot_of": str(run.out)}
    snap_settings = settings.replace(output=str(snapshot), keep_checkpoints=False)
    doc = engine.finish(snapshot, run.model, snap_settings, run.structure, run.allocation,
                        {**run.data_info, "trained_on": seen.summary()}, precision=run.precision, result=result)
    log(f"snapshot at step {until}/{settings.max_steps} written to {snapshot}")
    return doc


def main(argv: list[str] | None = None) -> int:
    from toolkit.training.settings import TrainSettings, check_allocation

    parser = argparse.ArgumentParser(prog="python -m toolkit.study.rung", description=__doc__.split("\n")[0])
    parser.add_argument("--settings-json", required=True)
    parser.add_argument("--until", type=int, required=True)
    parser.add_argument("--snapshot", required=True)
    args = parser.parse_args(argv)
    try:
        settings = TrainSettings.from_json(args.settings_json)
        check_allocation(settings)
        train_until(settings, until=args.until, snapshot=args.snapshot,
                    log=lambda m: print(m, file=sys.stderr, flush=True))  # noqa: T201
    except OutOfMemory as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return exc.exit_code
    except Interrupted as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return exc.exit_code
    except CmbaError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return ExitCode.BAD_INPUT
    return ExitCode.SUCCESS


if __name__ == "__main__":
    sys.exit(main())
