"""Progress of jobs and sweeps for the UI and the CLI, read from the jobs' run folders (toolkit.runs).

    >>> job_progress(store.get("3f2a9c1e-01"))      # {"state", "phase", "step", "max_steps", "fraction", "loss", ...}
    >>> sweep_progress("3f2a9c1e")                  # job_progress of every job of a sweep
    >>> loss_curves(store.list(sweep=sweep_id), smoothing=0.6)  # rows {job, name, ratio, seed, step, loss, smoothed}
    >>> smooth([4.0, 2.0, 3.0], 0.5)                # TensorBoard's debiased exponential moving average

Nothing here writes: training appends `metrics.jsonl` and evaluation stores `eval/<tag>/`, this module reads
them while they are being written (a line being written is skipped) and never blocks on a job.
"""

from __future__ import annotations

from pathlib import Path

from toolkit import runs
from toolkit.errors import InputError
from toolkit.queue.executor import PYTHON, tail_lines
from toolkit.queue.states import JobState
from toolkit.queue.store import Job, JobStore


def read_metrics(output_dir: str | Path | None) -> list[runs.MetricLine]:
    """Every complete metrics line of a job's run folder ([] before training starts)."""
    return runs.read_metrics(output_dir)


def last_metrics(output_dir: str | Path | None) -> runs.MetricLine | None:
    """The last complete metrics line, read from the end of the file."""
    return runs.last_metric(output_dir)


def step_name(step) -> str:
    """'train', 'evaluate', ... for `python -m toolkit <command>` steps, else the program's name."""
    step = list(step)
    for i in range(len(step) - 2):  # `python -m toolkit train`, also behind `-m toolkit.training.distributed ... --`
        if step[i:i + 2] == ["-m", "toolkit"]:
            return step[i + 2]
    for i in range(len(step) - 1):  # `python -m toolkit.study.rung`: a module's last name ("rung")
        if step[i] == "-m" and step[i + 1].startswith("toolkit."):
            return "train" if step[i + 1] == "toolkit.study.rung" else step[i + 1].rsplit(".", 1)[-1]
    return Path(step[1] if step and step[0] == PYTHON and len(step) > 1 else step[0]).name if step else "?"


def job_scores(job: Job) -> dict[str, float]:
    """{eval tag: overall accuracy %} of the evaluations stored in the job's run folder (unreadable ones left out)."""
    return folder_scores(job.output_dir)


def folder_scores(folder: str | Path | None) -> dict[str, float]:
    """{eval tag: overall accuracy %} of the evaluations stored in a run folder (unreadable ones left out)."""
    scores = {}
    for tag in runs.evaluations(folder) if folder else []:
        try:
            scores[tag] = runs.read_evaluation(folder, tag).scores["overall"]
        except InputError:
            continue
    return scores


def job_progress(job: Job, *, log_lines: int = 20) -> dict:
    """State + progress of one job for the UI/CLI: step/max_steps, loss, ETA, current phase, log tail."""
    m = last_metrics(job.output_dir)
    step, max_steps = (m.step, m.max_steps) if m else (None, None)
    if job.meta.get("until") and max_steps:  # a halving rung's job trains to its rung's step, not the schedule's end
        max_steps = min(max_steps, int(job.meta["until"]))
    fraction = None
    if step is not None and max_steps:
        fraction = max(0.0, min(1.0, step / max_steps))
    if job.state is JobState.SUCCEEDED:
        fraction = 1.0
    arms = arm_progress(job)
    if arms:  # a pack: its progress is its arms' (steps done of steps to do; cancelled arms left out)
        counted = [a for a in arms if a["state"] != "cancelled" and a["max_steps"]]
        step = sum(a["step"] or 0 for a in counted) if counted else None
        max_steps = sum(a["max_steps"] for a in counted) if counted else None
        fraction = 1.0 if job.state is JobState.SUCCEEDED else (step / max_steps if max_steps else None)
        m = None
    return {
        "id": job.id, "name": job.name, "sweep": job.sweep_id, "state": job.state.value,
        "phase": step_name(job.steps[min(job.step_index, len(job.steps) - 1)]) if job.steps else None,
        "step": step, "max_steps": max_steps, "fraction": fraction, "loss": m.loss if m else None,
        "eta_s": m.eta_s if m else None,
        "attempts": job.attempts, "max_attempts": job.max_attempts, "reason": job.reason, "message": job.message,
        "scores": {} if arms else job_scores(job), "meta": job.meta, "output_dir": job.output_dir,
        "executor": job.executor, "engine_id": job.engine_id, "gpu_ids": job.gpu_ids,
        "log_tail": tail_lines(job.log_path, log_lines), "arms": arms,
    }


def arm_progress(job: Job) -> list[dict]:
    """A pack job's arms (toolkit.study.packrun.arm_states), each with its own "step", "max_steps", "fraction",
    "loss" and "scores" from its run folder; [] for any other job."""
    from toolkit.study.packrun import arm_states

    out = []
    for arm in arm_states(job) if job.meta.get("arms") else []:
        m = last_metrics(arm["output_dir"])
        done = arm["state"] == "succeeded"
        fraction = 1.0 if done else (max(0.0, min(1.0, m.step / m.max_steps)) if m and m.max_steps else None)
        out.append({**arm, "step": m.step if m else None, "max_steps": m.max_steps if m else None,
                    "fraction": fraction, "loss": m.loss if m else None, "scores": folder_scores(arm["output_dir"])})
    return out


def sweep_progress(sweep: str, *, store: JobStore | None = None, log_lines: int = 0) -> list[dict]:
    """`job_progress` of every job of a sweep (id or unique prefix)."""
    store = store or JobStore()
    return [job_progress(j, log_lines=log_lines) for j in store.list(sweep=store.resolve_sweep(sweep))]


def smooth(values: list[float], weight: float) -> list[float]:
    """Exponential moving average with TensorBoard's debiasing (the first points are not pulled toward 0).

    `weight` in [0, 1): 0 returns the values, 0.9 follows a trend over about 10 points.
    """
    if not 0 <= weight < 1:
        raise InputError(f"smoothing: must be in [0, 1), got {weight}")
    out, last = [], 0.0
    for n, value in enumerate(values, start=1):
        last = last * weight + (1 - weight) * value
        out.append(last / (1 - weight ** n) if weight else value)
    return out


def loss_curves(jobs, *, smoothing: float = 0.0) -> list[dict]:
    """Rows {job, name, ratio, seed, step, loss, smoothed} of every job's metrics, for one overlaid chart; a pack
    job (meta "arms") gives one curve per arm, its job `<id>.<k>`."""
    rows = []
    for job in jobs:
        arms = job.meta.get("arms")
        curves = ([(f"{job.id}.{k}", f"{job.name} {a.get('ratio')} s{a.get('seed')}", a) for k, a in
                   enumerate(arms, start=1)] if arms else [(job.id, job.name, {**job.meta, "output_dir": job.output_dir})])
        for key, name, arm in curves:
            points = [m for m in read_metrics(arm.get("output_dir")) if m.loss is not None]
            for m, smoothed in zip(points, smooth([m.loss for m in points], smoothing), strict=True):
                rows.append({"job": key, "name": name, "ratio": arm.get("ratio"), "seed": arm.get("seed"),
                             "step": m.step, "loss": m.loss, "smoothed": smoothed})
    return rows
