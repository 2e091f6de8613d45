"""Measure a sweep's speed on this machine before queueing it: its first job's own steps, shortened.

    record = measure(plan)                 # PROBE_STEPS training steps of the first arm, a batch of answers
    save(record, JobStore().folder)        # measured.jsonl of the job store, read by estimate.measured_here

Without an earlier run of a model on this device, `estimate_sweep` has nothing to go on. A probe runs what the
sweep's first job would run, as that job would (the same `train` and `evaluate` commands in child processes, so
imports, model loading, data loading and the device are the real ones), but trains PROBE_STEPS steps into a
temporary folder and answers one evaluation batch of questions, then deletes the folder:

- seconds per training sample: the slope of `metrics.jsonl` between the first and the last step (the first
  step's warm-up excluded), divided by the samples of a step;
- seconds per question: the evaluation's own generation time over its questions;
- the fixed cost of a job: the wall time of both commands less those two.

Those are the fields of a `RunRecord`, which `estimate_sweep` treats like a finished job's. A probe of a sweep
queued to Slurm is refused: its jobs run on the cluster's nodes, not here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from toolkit.errors import CmbaError, InputError
from toolkit.paths import PROJECT_ROOT
from toolkit.study.measured import RunRecord, append_probe

PROBE_STEPS = 6
"""training steps of a probe (capped by the sweep's own steps)"""
PROBE_BATCHES = 1
"""evaluation batches of a probe: whole batches, as a partial one answers fewer questions in the same time
(capped by the sweep's own limit)"""


@dataclasses.dataclass(frozen=True)
class Probe:
    """What a probe ran and measured."""

    record: RunRecord
    steps: int
    batch_size: int
    questions: int
    device: str
    wall_s: float
    created: float

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self.record), "steps": self.steps, "batch_size": self.batch_size,
                "questions": self.questions, "device": self.device, "wall_s": round(self.wall_s, 3),
                "created": self.created}

    def text(self) -> str:
        r = self.record
        parts = [f"{r.s_per_sample * self.batch_size:.2f} s per step of {self.batch_size} samples"]
        if r.s_per_question is not None:
            parts.append(f"{r.s_per_question:.3f} s per question")
        parts.append(f"{r.overhead_s:.1f} s fixed per job (loading, saving)")
        return f"measured on {self.device} in {self.wall_s:.0f} s: " + ", ".join(parts)


def probe_settings(plan, folder: Path) -> tuple[str, dict, dict | None]:
    """(job name, train settings, evaluate settings or None) of the probe: the first train job's, shortened, into
    `folder`."""
    if plan.spec.executor != "local":
        raise InputError(f"measure: the jobs of this sweep run on {plan.spec.executor}, not on this machine, so a "
                         "probe here would not tell their speed; queue it and read the ETA of its first job")
    job = next((j for j in plan.jobs if j.kind in ("train", "pack") and j.settings.get("train")), None)
    if job is None:
        raise InputError("measure: the sweep has no training job to measure")
    job = job.arms[0] if job.arms else job  # a pack: its first arm alone (a pack's step costs its arms' samples)
    train = dict(job.settings["train"])
    steps = min(PROBE_STEPS, train.get("max_steps") or PROBE_STEPS)
    train.update(output=str(folder / "adapter"), max_steps=steps, epochs=None, checkpoint_every=steps + 1,
                 resume=False, overwrite=False, progress=False)
    evaluate = job.settings.get("evaluate")
    if evaluate:
        evaluate = {**evaluate, "adapter": train["output"],
                    "limit": min(PROBE_BATCHES * (evaluate.get("batch_size") or 32), evaluate.get("limit") or 10**9)}
    return job.name, train, evaluate


THROWAWAY = re.compile(r"VQA accuracy [\d.]+ on \d+ questions")
"""the probe's evaluation line: an accuracy of a few steps on a few questions means nothing, so it is not shown"""


def run_step(argv: list[str], *, name: str, log) -> float:
    """Run one step in its own process group, its output line by line to `log`; its wall time in seconds."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    tail: list[str] = []
    try:
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                tail = (tail + [line])[-5:]
                if not THROWAWAY.search(line):
                    log(line)
        proc.wait()
    finally:  # interrupted (Ctrl-C, a Streamlit rerun): the child does not outlive the probe
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.returncode != 0:
        last = tail[-1] if tail else "no output"
        raise CmbaError(f"measure: `{name}` of the probe exited {proc.returncode}: {last}")
    return time.perf_counter() - t0


def measure(plan, *, log=print, scratch: str | Path | None = None) -> Probe:
    """Run the probe of `plan` (a SweepPlan) here; InputError when it cannot, CmbaError when a step fails."""
    from toolkit import runs
    from toolkit.study import estimate
    from toolkit.study.preflight import preflight

    if plan.spec.executor == "local" and (problems := preflight(plan.spec)):  # what would fail every job fails this
        raise InputError(f"measure: nothing to measure, the sweep would fail: {problems[0]}")
    folder = Path(tempfile.mkdtemp(prefix="cmba-probe-", dir=scratch))
    try:
        name, train, evaluate = probe_settings(plan, folder)
        base = [sys.executable, "-m", "toolkit"]
        log(f"probe: training {train['max_steps']} step(s) of {name}")
        wall = run_step([*base, "train", "--settings-json", json.dumps(train)], name="train", log=log)
        lines = [m for m in runs.read_metrics(train["output"]) if m.elapsed_s is not None]
        result = runs.read_adapter_doc(train["output"]).result or runs.ResultInfo()
        samples_per_step = train["batch_size"] * (train.get("grad_accum") or 1)
        if len(lines) >= 2 and lines[-1].step > lines[0].step:
            train_s = lines[-1].elapsed_s - lines[0].elapsed_s
            per_sample = train_s / ((lines[-1].step - lines[0].step) * samples_per_step)
        else:  # one step: its warm-up stays in
            train_s = result.train_time_s or (lines[-1].elapsed_s if lines else 0.0)
            per_sample = train_s / (max(1, train["max_steps"]) * samples_per_step)
        eval_s = per_question = None
        questions = 0
        if evaluate:
            log(f"probe: answering {evaluate['limit']} question(s) of {evaluate['dataset']} ({evaluate['split']})")
            wall += run_step([*base, "evaluate", "--settings-json", json.dumps(evaluate)], name="evaluate", log=log)
            eval_s, per_question = estimate.eval_rate(train["output"])
            questions = round(eval_s / per_question) if eval_s and per_question else 0
        steps_s = per_sample * samples_per_step * train["max_steps"]
        record = RunRecord(model=plan.spec.model, gpu=(result.device or "cpu") != "cpu",
                           s_per_sample=per_sample, s_per_question=per_question,
                           overhead_s=max(0.0, wall - steps_s - (eval_s or 0.0)), source="probe")
        return Probe(record=record, steps=train["max_steps"], batch_size=samples_per_step, questions=questions,
                     device=result.device or "cpu", wall_s=wall, created=time.time())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def busy_note(store) -> str | None:
    """A warning when jobs of `store` run on this machine now: the probe shares it with them and measures less
    than an idle machine's speed (the jobs it estimates will share it too, or not)."""
    running = [j for j in store.list(states=["running"]) if j.executor == "local"]
    if running:
        return (f"{len(running)} job(s) are running here: the probe shares the machine with them, so the speed it "
                "measures is that of a busy machine")
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > 0.75 * cores:  # other programs: a loaded CPU slows torch's threads far more than its share
        return (f"this machine is busy (load {load:.1f} on {cores} cores) with other programs: the probe measures "
                "a busy machine, and its estimate will be pessimistic if the jobs run on a quiet one")
    return None


def save(probe: Probe, folder: str | Path) -> Path:
    """Append the probe to the job store `folder`'s measured.jsonl (toolkit.study.measured), where estimates read it."""
    return append_probe(probe.to_dict(), folder)
