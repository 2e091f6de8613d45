"""A pack job's step (`python -m toolkit pack`, #28): its arms trained in one process on one copy of the base
(toolkit.training.pack), then each arm evaluated in that process too, on the base already in memory.

    settings = PackSettings.from_json('{"arms": [{"train": {...}, "evaluate": {...}}, ...]}')   # or a file
    report = run_pack(settings)          # trains (resuming), evaluates, skips what is already done
    report.mode, report.base_loads       # "fused" / "sequential" / "single"; how many times a base was loaded

The settings are {"arms": [{"train": TrainSettings fields, "evaluate": EvalSettings fields or null}, ...]}
(optionally "fuse": false, "stack_rows": N, and "search": a successive-halving search run inside the pack,
toolkit.study.packsearch); a packed sweep's job (toolkit.study.sweep) stores the same arms in
`Job.settings["arms"]`. Every arm names its run folder (`train.output`); its evaluation scores that folder.

**Evaluation in the same process.** When this process trained at least one arm, the trained model with its LoRA
layers unloaded is the bare base each arm's adapter is loaded onto, exactly as `evaluate --adapter` loads it
(PEFT, unmerged: toolkit.evaluation.evaluate.evaluate_prepared), so it writes the same eval/<tag>/results.json
and predictions.jsonl (tests/training/test_pack_jobs.py compares them). That base is reused only where it is the
model `evaluate` would load: the same precision (`evaluate` uses "auto" on this device), not 4-bit (preparing for
k-bit training casts the base's norms), no gradient checkpointing, and no module that training changes (batch
norm's running statistics). Otherwise, and when every arm was trained before, the base is loaded once, as
`evaluate` loads it, for all the arms' evaluations (the log says why).

**Cancelling one arm** (`jobs cancel <job>.<k>`, the Train & jobs page): `cancel_arm` writes
`cancel-requested.json` into the arm's run folder; the pack reads it at every step boundary, and the arm leaves
the pack there (checkpointed, toolkit.training.pack's `leave`) while the others go on; an arm cancelled before
its pack starts is not trained. Its evaluation is skipped; the pack job still succeeds with the other arms.
`retry_arm` removes the request (the pack job, run again, resumes the arm from its checkpoint). `arm_states`
says where each arm of a pack job stands.

**Resume.** Every arm resumes: an arm whose cmba.json exists is not trained again, the others continue from
their newest valid checkpoint; an evaluation whose results.json exists is not run again. A pack job killed
anywhere (kill -9 included) and run again ends as the uninterrupted one would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import InputError
from toolkit.fields import json_argument
from toolkit.outcomes import Reason

MAX_ARMS = 64
"""the most arms one pack trains (its settings travel as one command-line argument)"""


@dataclass(frozen=True)
class PackArm:
    train: object
    """TrainSettings"""
    evaluate: object | None
    """EvalSettings of its evaluation (its adapter: the arm's run folder), or None"""


@dataclass(frozen=True)
class PackSettings:
    """The arms of one pack and how to train them (toolkit.training.pack.train_pack's `fuse` and `stack_rows`)."""

    arms: tuple[PackArm, ...]
    fuse: bool = True
    stack_rows: int | None = None
    search: object | None = None
    """toolkit.study.packsearch.PackSearch: successive halving inside the pack (None: every arm trains fully)"""

    @classmethod
    def from_dict(cls, data: dict) -> PackSettings:
        from toolkit.training.settings import EvalSettings, TrainSettings

        if not isinstance(data, dict) or not isinstance(data.get("arms"), list) or not data["arms"]:
            raise InputError('pack: the settings must be {"arms": [{"train": {...}, "evaluate": {...}}, ...]} with '
                             "at least one arm")
        unknown = sorted(set(data) - {"arms", "fuse", "stack_rows", "search"})
        if unknown:
            raise InputError(f"pack: unknown setting(s) {', '.join(unknown)} (allowed: arms, fuse, stack_rows, "
                             f"search)")
        if len(data["arms"]) > MAX_ARMS:
            raise InputError(f"pack: at most {MAX_ARMS} arms per pack, got {len(data['arms'])}")
        arms = []
        for i, arm in enumerate(data["arms"], start=1):
            if not isinstance(arm, dict) or not isinstance(arm.get("train"), dict):
                raise InputError(f'pack: arm {i} must be {{"train": {{...}}, "evaluate": {{...}} or null}}')
            train = TrainSettings.from_dict(arm["train"])
            if not train.output:
                raise InputError(f"pack: arm {i} names no run folder (train.output); each arm needs its own")
            evaluate = arm.get("evaluate")
            if evaluate is not None:
                evaluate = EvalSettings.from_dict({"adapter": train.output, **evaluate})
                if evaluate.base or not evaluate.adapter:
                    raise InputError(f"pack: arm {i}'s evaluation must score its adapter, not a base model")
                if Path(evaluate.adapter).resolve() != Path(train.output).resolve():
                    raise InputError(f"pack: arm {i} evaluates '{evaluate.adapter}' but trains into "
                                     f"'{train.output}'; an arm's evaluation scores its own run folder")
            arms.append(PackArm(train=train, evaluate=evaluate))
        stack_rows = data.get("stack_rows")
        if stack_rows is not None and (not isinstance(stack_rows, int) or stack_rows < 1):
            raise InputError(f"pack: stack_rows must be a whole number >= 1, got {stack_rows!r}")
        search = None
        if data.get("search") is not None:
            from toolkit.study.packsearch import PackSearch

            search = PackSearch.from_dict(data["search"])
            if any(a.evaluate is None for a in arms):
                raise InputError("pack: a search decides on evaluations; every arm needs its evaluation")
            if any(a.train.max_steps != search.search.rungs[-1] for a in arms):
                raise InputError(f"pack: every arm of a search trains the full schedule ({search.search.rungs[-1]} "
                                 f"steps, its last rung)")
        return cls(arms=tuple(arms), fuse=bool(data.get("fuse", True)), stack_rows=stack_rows, search=search)

    @classmethod
    def from_json(cls, text: str) -> PackSettings:
        """An inline JSON object, or the path of a file holding one."""
        return cls.from_dict(json_argument(text, inline=("{", "[")))

    @staticmethod
    def arm_dict(train: dict, evaluate: dict | None) -> dict:
        return {"train": train, "evaluate": evaluate}

    def to_dict(self) -> dict:
        d = {"arms": [self.arm_dict(a.train.to_dict(), a.evaluate.to_dict() if a.evaluate else None)
                      for a in self.arms]}
        if not self.fuse:
            d["fuse"] = False
        if self.stack_rows is not None:
            d["stack_rows"] = self.stack_rows
        if self.search is not None:
            d["search"] = self.search.to_dict()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)


@dataclass
class PackReport:
    """What `run_pack` did."""

    mode: str
    """how the arms trained in this process: "fused", "sequential" or "single" (also when none was left)"""
    reason: str | None
    trained: int
    """arms trained (or continued) in this process"""
    base_loads: int
    """bases loaded for evaluation after training (0: the trained one was reused, or nothing to evaluate)"""
    left: dict[str, str] = field(default_factory=dict)
    """{run name: why} of the arms that left the pack unfinished (cancelled)"""
    evaluations: list[dict] = field(default_factory=list)
    """per arm with an evaluation, in the arms' order: {"adapter", "tag", "ran": bool (False: its results were
    already written), "overall" (when it ran)}"""

    def to_dict(self) -> dict:
        return {"mode": self.mode, "reason": self.reason, "trained": self.trained, "base_loads": self.base_loads,
                "left": self.left, "evaluations": self.evaluations}


# ------------------------------------------------------------------------------------- one arm of a pack job

CANCEL_FILE = "cancel-requested.json"
"""in an arm's run folder: the request that it leave its pack ({"reason", "time"})"""


def cancel_reason(train) -> str | None:
    """Why the arm of these TrainSettings must leave its pack (its cancel request), or None."""
    try:
        doc = json.loads((Path(train.output) / CANCEL_FILE).read_text())
    except (OSError, ValueError):
        return None
    return str(doc.get("reason") or Reason.CANCELLED) if isinstance(doc, dict) else Reason.CANCELLED


def job_arm(store, arm_id: str):
    """(job, k, arm meta) of an arm id `<job id>.<k>` (k from 1), or an InputError naming what is allowed."""
    job_id, _, k = arm_id.rpartition(".")
    job = store.get(job_id)
    arms = job.meta.get("arms") or []
    if not arms:
        raise InputError(f"job {job_id} is not a pack: it has no arms to cancel one of (cancel the job itself)")
    if not k.isdigit() or not 1 <= int(k) <= len(arms):
        raise InputError(f"arm: job {job_id} has arms {job_id}.1 to {job_id}.{len(arms)}, got {arm_id!r}")
    return job, int(k), arms[int(k) - 1]


def arm_states(job) -> list[dict]:
    """Each arm of a pack job: {"id", "ratio", "seed", "output_dir", "state"}; its state is "succeeded" (its run
    folder finished), "cancelled" (asked to leave, and not finished), else the job's own state."""
    from toolkit import runs

    out = []
    for k, arm in enumerate(job.meta.get("arms") or [], start=1):
        folder = Path(arm["output_dir"])
        if (folder / runs.ADAPTER_DOC).is_file():
            state = "succeeded"
        elif (folder / CANCEL_FILE).is_file():
            state = "cancelled"
        else:
            state = job.state.value
        out.append({"id": f"{job.id}.{k}", "ratio": arm.get("ratio"), "seed": arm.get("seed"),
                    "output_dir": arm["output_dir"], "state": state})
    return out


def cancel_arm(store, arm_id: str) -> dict:
    """Ask one arm of a pack job to leave its pack; the job itself is cancelled when none of its arms is left to
    train. Returns the arm's `arm_states` entry with "job_cancelled": bool."""
    import time

    from toolkit import runs

    job, k, arm = job_arm(store, arm_id)
    state = arm_states(job)[k - 1]
    if state["state"] == "succeeded":
        raise InputError(f"arm {arm_id}: already trained ({arm['output_dir']}); nothing to cancel")
    folder = Path(arm["output_dir"])
    folder.mkdir(parents=True, exist_ok=True)
    runs.write_json(folder / CANCEL_FILE, {"reason": Reason.CANCELLED, "time": time.time()})
    job_cancelled = False
    if not job.state.finished and all(a["state"] in ("succeeded", "cancelled") for a in arm_states(job)):
        store.request_cancel(job.id)
        job_cancelled = True
    return {**arm_states(store.get(job.id))[k - 1], "job_cancelled": job_cancelled}


def retry_arm(store, arm_id: str) -> dict:
    """Withdraw an arm's cancel request; a finished pack job is queued again (it resumes the arm from its
    checkpoint, skipping what is done). Refused while the pack runs (the arm has left that process)."""
    job, k, _ = job_arm(store, arm_id)
    state = arm_states(job)[k - 1]
    if state["state"] != "cancelled":
        raise InputError(f"arm {arm_id}: not cancelled ({state['state']}); only a cancelled arm is retried")
    if job.state.value == "running":
        raise InputError(f"arm {arm_id}: its pack {job.id} is running and the arm has left it; retry the arm once "
                         f"the pack has ended")
    (Path(state["output_dir"]) / CANCEL_FILE).unlink(missing_ok=True)
    if job.state.finished:
        store.retry(job.id, succeeded=True)  # the pack skips its finished arms and evaluations
    return arm_states(store.get(job.id))[k - 1]


def reuse_blocker(model, train) -> str | None:
    """Why the model a pack trained (`model`: the PEFT model, `train`: its first arm's TrainSettings) is not the
    base `evaluate` would load (None when it is)."""
    from toolkit.training.modeling import default_device, resolve_precision

    device = default_device()
    trained, evaluated = resolve_precision(train.precision, device), resolve_precision("auto", device)
    if trained != evaluated:
        return f"it was trained in {trained}; `evaluate` loads {evaluated} here"
    if train.quantize:
        return "4-bit training prepares the base (casts its norms) differently from evaluation"
    if train.gradient_checkpointing:
        return "gradient checkpointing changed the base's modules for training"
    changed = [n for n, m in model.get_base_model().named_modules() if getattr(m, "running_mean", None) is not None]
    if changed:
        return f"training updated running statistics of {', '.join(changed[:3])}"
    return None


def run_pack(settings: PackSettings, *, log=None, stop_after: int | None = None) -> PackReport:
    """Train the pack's arms (resuming; complete arms skipped), then evaluate each arm whose results are not
    written yet, on the trained base where it can be reused, else on one base loaded for them all.

    Raises what training raises: toolkit.outcomes.Interrupted (a signal or `stop_after`: every unfinished arm
    checkpointed), OutOfMemory, InputError.
    """
    import gc

    from toolkit.evaluation.evaluate import evaluate_prepared, load_base_for, prepare_adapter_evaluation
    from toolkit.training.loop import _log
    from toolkit.training.pack import train_pack
    from toolkit.training.settings import check_allocation

    log = log or _log
    for arm in settings.arms:
        check_allocation(arm.train)
    keep: dict = {}
    search, judge, leave = settings.search, None, cancel_reason
    if search is not None:
        from toolkit.study.packsearch import RungJudge

        judge = RungJudge(search, {str(Path(a.train.output).resolve()): a.evaluate for a in settings.arms}, log=log)

        def leave(train):  # a cancelled arm, or one whose ratio an earlier rung dropped (after a restart)
            return cancel_reason(train) or judge.leave(train)
    result = train_pack([a.train for a in settings.arms], fuse=settings.fuse, stack_rows=settings.stack_rows,
                        log=log, stop_after=stop_after, keep=keep, leave=leave,
                        rungs=tuple(search.search.rungs[:-1]) if search else (), at_rung=judge)
    report = PackReport(mode=result.mode, reason=result.reason, trained=result.arms, base_loads=0,
                        left=result.left)
    todo = []
    for arm, doc in zip(settings.arms, result.docs):
        if arm.evaluate is None or doc is None:  # a cancelled arm is not evaluated
            continue
        e = arm.evaluate
        prepared = prepare_adapter_evaluation(
            arm.train.output, e.dataset, split=e.split, limit=e.limit, columns=e.columns, image_dir=e.image_dir,
            sample_seed=e.sample_seed, batch_size=e.batch_size, max_new_tokens=e.max_new_tokens, holdout=e.holdout,
            allow_contaminated=e.allow_contaminated, images_anywhere=e.images_anywhere)
        report.evaluations.append({"adapter": str(prepared.folder), "tag": prepared.tag, "ran": False})
        if prepared.done():
            log(f"{prepared.folder.name}: evaluation {prepared.tag} already written; not run again")
        else:
            todo.append((report.evaluations[-1], prepared))
    base = None
    if todo and keep:
        why = reuse_blocker(keep["model"], settings.arms[0].train)
        if why is None:
            from toolkit.training.modeling import default_device, resolve_precision

            device = default_device()
            base = (keep["model"].unload(), keep["processor"], resolve_precision("auto", device), device)
            log(f"evaluating {len(todo)} arm(s) on the base model trained here (its LoRA layers unloaded)")
        else:
            log(f"evaluation loads the base model again: {why}")
    keep.clear()
    gc.collect()
    for entry, prepared in todo:
        if base is None:
            base = load_base_for(prepared)
            report.base_loads += 1
        model, processor, precision, device = base
        log(f"evaluating {prepared.folder.name} on {len(prepared.data)} questions")
        doc = evaluate_prepared(model, processor, prepared, precision=precision, device=device, log=log)
        entry.update(tag=Path(doc["path"]).name, ran=True, overall=doc["scores"]["overall"])
    if search is not None:
        from toolkit.study.packsearch import finish

        if (final := finish(search, list(settings.arms))) is not None:
            log(f"rung {final['rung']} ({final['steps']} steps, final): "
                + ", ".join(f"{d['arm']} {d['mean']:.2f}%" for d in final["decisions"]))
    return report
