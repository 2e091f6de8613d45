"""How long a sweep will take, from the step rates measured by earlier runs on this machine.

    history = measured_here(JobStore())      # what finished jobs took here, and adapters trained with `train`
    est = estimate_sweep(plan_jobs(plan), history, slots=2)
    est.text()      # "about 12–15 min for 5 jobs on 2 slots (from 4 earlier runs of demo, batch 16, on CPU)"

`estimate_sweep` is a pure function of its inputs. A job's time = steps x seconds per step (the seconds per
training sample measured by earlier runs of the same model on the same kind of device, times the batch size)
+ evaluation questions x seconds per question + the fixed cost of a job (loading, saving: its wall time less
training and evaluation). The range spans the fastest and slowest of those runs; jobs are spread over the
worker's slots in queue order. Without an earlier run of the model on this device there is no estimate (None)
until a probe (toolkit.study.probe: a few steps of the sweep's first job, run here) has measured one; the jobs
panel also shows a measured ETA as soon as the first job has trained a few steps.
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass, replace

from toolkit.study.measured import RunRecord, saved_probes


@dataclass(frozen=True)
class JobCost:
    """What one planned job will do."""

    model: str
    gpu: bool
    steps: float = 0
    """optimizer steps (inf: trained for epochs, length unknown here)"""
    batch_size: int = 0
    """samples per optimizer step (batch size x gradient accumulation)"""
    questions: float = 0
    """evaluation questions (0 = no evaluation, inf = a whole split of unknown size)"""


@dataclass(frozen=True)
class Estimate:
    low_s: float
    high_s: float
    jobs: int
    slots: int
    basis: str
    """which measurements it rests on, for the user"""
    ahead: int = 0
    """unfinished jobs of other sweeps the queue serves first (counted in the time)"""

    def span(self) -> str:
        """'5.1–6.0' (minutes), or one number when both ends round alike."""
        lo, hi = _minutes(self.low_s), _minutes(self.high_s)
        return lo if lo == hi else f"{lo}–{hi}"

    def text(self) -> str:
        return f"about {self.span()} min for {self.jobs} job(s) on {self.slots} slot(s) ({self.basis})"

    def left_text(self, *, search: bool = False) -> str:
        """What `time_left` found, for the jobs panel and `jobs list`; `search`: the sweep is a halving search that
        queues its next rungs as jobs (`queues_rungs`), not queued yet."""
        if not self.jobs:
            return "every job has ended"
        return (f"about {self.span()} min for {self.jobs} unfinished job(s) on {self.slots} slot(s)"
                + (f", behind {self.ahead} job(s) of other sweeps queued first" if self.ahead else "")
                + (" queued so far (the search queues each next rung when the current one ends)" if search else ""))


def queues_rungs(spec: dict | None) -> bool:
    """Whether a stored sweep spec is a halving search that queues each next rung as new jobs (a packed search
    decides its rungs inside its running pack: its jobs are all queued already)."""
    return bool((spec or {}).get("search")) and not (spec or {}).get("pack")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}" if seconds < 600 else f"{seconds / 60:,.0f}"


def _makespan(durations: list[float], slots: int) -> float:
    """Jobs taken in queue order by the first free slot (how the worker claims them)."""
    free = [0.0] * max(1, slots)
    for d in durations:
        i = free.index(min(free))
        free[i] += d
    return max(free)


def _same(cost: JobCost, history: list[RunRecord]) -> list[RunRecord]:
    """The measurements of `cost`'s model on its kind of device."""
    return [r for r in history if r.model == cost.model and r.gpu == cost.gpu]


def _job_range(cost: JobCost, same: list[RunRecord], *, loaded: bool = False,
               train_left_s: float | None = None) -> tuple[float, float] | None:
    """(fastest, slowest) seconds of one job at the rates of `same`, or None when a part it still has to do has no
    measured rate. `loaded`: its loading is behind it (no fixed cost); `train_left_s`: its training's own ETA."""
    train = [r.s_per_sample for r in same if r.s_per_sample]
    evals = [r.s_per_question for r in same if r.s_per_question]
    fixed = [r.overhead_s for r in same if r.overhead_s is not None]
    lo = hi = 0.0 if loaded else (statistics.median(fixed) if fixed else 0.0)
    if train_left_s is not None:
        lo, hi = lo + train_left_s, hi + train_left_s
    elif cost.steps:
        if not train:
            return None
        lo, hi = lo + cost.steps * cost.batch_size * min(train), hi + cost.steps * cost.batch_size * max(train)
    if cost.questions:
        if not evals:
            return None
        lo, hi = lo + cost.questions * min(evals), hi + cost.questions * max(evals)
    return lo, hi


def estimate_sweep(jobs: list[JobCost], history: list[RunRecord], *, slots: int) -> Estimate | None:
    """The sweep's wall time range from `history`, or None when no earlier run matches its model and device."""
    if not jobs or any(math.isinf(j.steps) or math.isinf(j.questions) for j in jobs):
        return None  # trained for epochs, or evaluated on a whole split: their size is not known here
    low, high, used = [], [], set()
    for job in jobs:
        same = _same(job, history)
        span = _job_range(job, same) if same else None
        if span is None:
            return None
        low.append(span[0])
        high.append(span[1])
        used.update(id(r) for r in same)
    models = sorted({j.model for j in jobs})
    device = "GPU" if any(j.gpu for j in jobs) else "CPU"
    probes = sum(1 for r in history if id(r) in used and r.source == "probe")
    counted = [f"{len(used) - probes} earlier run(s)"] if len(used) > probes else []
    counted += [f"{probes} probe(s)"] if probes else []
    basis = f"from {' and '.join(counted)} of {', '.join(models)} on {device} here"
    return Estimate(low_s=_makespan(low, slots), high_s=_makespan(high, slots), jobs=len(jobs), slots=slots,
                    basis=basis)


# ------------------------------------------------------------------------------------- reading the store


def measured_runs(store) -> list[RunRecord]:
    """A RunRecord per succeeded sweep job of `store` (jobs queued with settings; others are skipped)."""
    from toolkit import runs

    out = []
    for job in store.list(states=["succeeded"]):
        train, evaluate = job.settings.get("train"), job.settings.get("evaluate")
        model = _model(job) or job.meta.get("model")
        if not model or not job.output_dir:
            continue
        s_per_sample = train_s = None
        arms = len(job.settings.get("arms") or []) or 1  # a pack: its steps' time is every arm's
        m = runs.last_metric(job.output_dir) if train else None
        if m and m.step and m.elapsed_s and train.get("batch_size"):
            train_s = m.elapsed_s
            s_per_sample = m.elapsed_s / (m.step * train["batch_size"] * (train.get("grad_accum") or 1) * arms)
        eval_s, s_per_question = eval_rate(job.output_dir) if evaluate else (None, None)
        if s_per_sample is None and s_per_question is None:
            continue
        overhead = None
        if job.started and job.finished and job.retries == 0 and job.attempts <= 1:
            overhead = max(0.0, job.finished - job.started - (train_s or 0.0) - (eval_s or 0.0) * arms)
        out.append(RunRecord(model=model, gpu=job.gpus > 0, s_per_sample=s_per_sample,
                             s_per_question=s_per_question, overhead_s=overhead))
    return out


def eval_rate(folder) -> tuple[float | None, float | None]:
    """(evaluation seconds, seconds per question) of the run folder's last readable evaluation."""
    from toolkit import runs
    from toolkit.errors import InputError

    out = (None, None)
    for tag in runs.evaluations(folder):
        try:
            result = runs.read_evaluation(folder, tag)
        except InputError:
            continue
        n = (result.scores or {}).get("n")
        if result.eval_time_s and n:
            out = (result.eval_time_s, result.eval_time_s / n)
    return out


def measured_adapters(folder, *, skip=()) -> list[RunRecord]:
    """A RunRecord per complete adapter of the store `folder` (trained by `train` or a job; `skip`: paths
    already counted through the job store): the training and evaluation rates its cmba.json and results keep."""
    from pathlib import Path

    from toolkit import runs
    from toolkit.errors import InputError

    skip = {str(Path(p).resolve()) for p in skip}
    out = []
    for sub in runs.run_folders(Path(folder)):
        if str(sub.resolve()) in skip or not runs.is_complete(sub):
            continue
        try:
            doc = runs.read_adapter_doc(sub)
        except InputError:
            continue
        training, result = doc.training or runs.TrainingInfo(), doc.result or runs.ResultInfo()
        model = doc.base_model.id
        samples = (result.steps or 0) * (training.batch_size or 0) * (training.grad_accum or 1)
        per_sample = result.train_time_s / samples if samples and result.train_time_s else None
        per_question = eval_rate(sub)[1]
        if model and (per_sample or per_question):
            out.append(RunRecord(model=model, gpu=(result.device or "cpu") != "cpu", s_per_sample=per_sample,
                                 s_per_question=per_question))
    return out


def job_cost(settings: dict, *, model: str, gpu: bool) -> JobCost:
    """The JobCost of a job's settings ({"train": ..., "evaluate": ...}, as planned and as stored); a pack job's
    ("arms": [{"train", "evaluate"}, ...]) costs its arms' samples and questions together."""
    if settings.get("arms"):
        costs = [job_cost(a, model=model, gpu=gpu) for a in settings["arms"]]
        steps = max(c.steps for c in costs)
        samples = sum(c.steps * c.batch_size for c in costs)
        return JobCost(model=model, gpu=gpu, steps=steps,
                       batch_size=samples / steps if steps and not math.isinf(steps) else costs[0].batch_size,
                       questions=sum(c.questions for c in costs))
    train, evaluate = settings.get("train"), settings.get("evaluate")
    steps = (train or {}).get("max_steps") or 0
    if train and not steps:
        steps = math.inf  # epochs: the dataset's size decides; no estimate
    return JobCost(model=model, gpu=gpu, steps=steps,
                   batch_size=((train or {}).get("batch_size") or 0) * ((train or {}).get("grad_accum") or 1),
                   questions=_questions(evaluate))


def _questions(evaluate: dict | None) -> float:
    """Questions an evaluation answers: its limit; a synthetic split's size (known without reading images: its
    records are generated on access); else inf (a whole split of a dataset not read here)."""
    if not evaluate:
        return 0
    if evaluate.get("limit"):
        return evaluate["limit"]
    dataset = str(evaluate.get("dataset") or "")
    if dataset.startswith("synthetic:") and not evaluate.get("holdout"):
        return _synthetic_size(dataset, evaluate.get("split") or "validation")
    return math.inf


@functools.lru_cache(maxsize=64)
def _synthetic_size(dataset: str, split: str) -> float:
    """Questions in a synthetic split, counted once per process (the jobs panel asks every 2 s for every job)."""
    from toolkit.data.sources import load_vqa
    from toolkit.errors import CmbaError

    try:
        return len(load_vqa(dataset, split=split))
    except CmbaError:
        return math.inf


def plan_jobs(plan) -> list[JobCost]:
    """The JobCost of every job of a SweepPlan (toolkit.study.sweep)."""
    return [job_cost(j.settings, model=plan.spec.model, gpu=plan.spec.gpus_per_job > 0) for j in plan.jobs]


def time_left(jobs, history: list[RunRecord], *, slots: int, ahead=()) -> Estimate | None:
    """How long the unfinished ones of `jobs` (store Jobs of one sweep) still take, or None when that cannot be
    told (a job trained for epochs, jobs without settings, or no measured rate for a part still to run).
    `ahead`: unfinished jobs of other sweeps the queue serves first (it is FIFO): they hold the slots before
    these, so they count in the time (and must be estimable too).

    A queued job costs what `estimate_sweep` counts. A running job in training has its own ETA (from its metrics)
    and then its evaluation; one in a later step has its evaluation left (counted whole: steps report no
    progress); a running job's loading is behind it. Running jobs hold the slots first. The running jobs' own
    steps are rates too, so the answer exists from a sweep's first steps when its evaluation rate is known."""
    from toolkit import runs
    from toolkit.study.progress import step_name

    mine = [j for j in jobs if not j.state.finished]
    if not mine:
        return Estimate(low_s=0.0, high_s=0.0, jobs=0, slots=slots, basis="every job has ended")
    others = [j for j in ahead if not j.state.finished]
    waiting = sorted([*others, *mine], key=lambda j: j.state.value != "running")  # stable: queue order after
    if not all(_model(j) for j in waiting):
        return None  # jobs queued without settings (older stores): their work is not known here
    costs = {j.id: job_cost(j.settings, model=_model(j), gpu=j.gpus > 0) for j in waiting}
    metrics = {j.id: runs.last_metric(j.output_dir) for j in waiting if j.state.value == "running"}
    live = [RunRecord(model=costs[i].model, gpu=costs[i].gpu, source="live",
                      s_per_sample=m.elapsed_s / (m.step * costs[i].batch_size))
            for i, m in metrics.items() if m and m.step >= 2 and m.elapsed_s and costs[i].batch_size]
    history = [*history, *live]
    low, high = [], []
    for j in waiting:
        cost, m = costs[j.id], metrics.get(j.id)
        if math.isinf(cost.steps) or math.isinf(cost.questions):
            return None
        phase = step_name(j.steps[min(j.step_index, len(j.steps) - 1)]) if j.steps else "train"
        if phase not in ("train", "pack"):  # a pack's one step trains, then evaluates
            cost = replace(cost, steps=0)  # its training is behind it
        eta = m.eta_s if cost.steps and m and m.eta_s is not None else None
        span = _job_range(cost, _same(cost, history), loaded=j.id in metrics, train_left_s=eta)
        if span is None:
            return None
        low.append(span[0])
        high.append(span[1])
    return Estimate(low_s=_makespan(low, slots), high_s=_makespan(high, slots), jobs=len(mine), slots=slots,
                    basis="from the rates measured here and the running jobs' own steps", ahead=len(others))


def queued_ahead(store, jobs) -> list:
    """Unfinished jobs outside `jobs` that the queue (FIFO: toolkit.queue.store.JobStore.claim) serves before the
    last unfinished one of `jobs`: they hold the worker's slots first."""
    ids = {j.id for j in jobs}
    everything = store.list()  # queue order
    last = max((i for i, j in enumerate(everything) if j.id in ids and not j.state.finished), default=-1)
    return [j for j in everything[:last] if j.id not in ids and not j.state.finished]


def _model(job) -> str | None:
    return (job.settings.get("train") or {}).get("model") or (job.settings.get("evaluate") or {}).get("base")


def measured_here(store, adapters=None) -> list[RunRecord]:
    """Every measurement on this machine: the store's succeeded jobs, then the adapters of the store `adapters`
    (default: the adapter store) that no job trained, then the probes saved in the job store's folder."""
    from toolkit.paths import adapters_dir

    skip = [j.output_dir for j in store.list() if j.output_dir]
    return measured_runs(store) + measured_adapters(adapters or adapters_dir(), skip=skip) + saved_probes(store.folder)
