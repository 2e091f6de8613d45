"""Successive halving inside a pack (#28): the rungs are evaluation points of one running pack, not new jobs.

    python -m toolkit sweep --model demo --dataset synthetic:shapes --design simplex-lattice:2 --search halving \\
        --max-steps 300 --seeds 2 --budget-rank 8 --holdout 0.1 --eval-split train --pack

The sweep queues one pack job holding every arm (ratios x seeds of its one budget), each with the full
schedule. At each rung's step (before the last) the pack (toolkit.training.pack's `rungs` / `at_rung`)
checkpoints every arm, writes its adapter at that step as a snapshot folder (as a rung job would), and
`RungJudge` evaluates each snapshot in the same process (the shared model with that arm's adapter alone active,
toolkit.evaluation.evaluate.evaluate_loaded), then decides the rung with the job system's own rule
(toolkit.study.selection.decide: mean over seeds, noise-aware, 1:1:1 always kept) into the same record
(`<jobs folder>/halving/<sweep>.json`, which `halving.status`, the Study page and `study` read). The arms of the
ratios it drops leave the pack there (checkpointed); the survivors train on, nothing is re-queued and no base
is loaded again. After the last step the survivors are evaluated (toolkit.study.packrun) and `finish` writes
the final rung; the pack job's follow-up hook (`toolkit.study.halving.on_pack_search_finished`) then recommends
and queues the confirmation as the job-based search does.

Resume: a pack killed anywhere and run again reads the record, so a ratio dropped at a rung is not trained
again, a rung already decided is not decided again, and snapshots and evaluations already written are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toolkit import runs
from toolkit.errors import InputError
from toolkit.study.search import Search
from toolkit.study.selection import folder_score, pooled, rung_entry

PACK_SEARCH_HOOK = "toolkit.study.halving:on_pack_search_finished"
"""the follow-up hook a pack job with a search names: recommend and queue the confirmation"""


def record_path(sweep_id: str) -> Path:
    """The search's record, where the job system's halving keeps it (toolkit.study.halving.record_path)."""
    from toolkit.paths import jobs_dir

    return jobs_dir() / "halving" / f"{sweep_id}.json"


@dataclass(frozen=True)
class PackSearch:
    """A pack's halving search: its sweep (where the record goes) and the search (rungs, eta, z)."""

    sweep: str
    search: Search

    @classmethod
    def from_dict(cls, d: dict) -> PackSearch:
        if not isinstance(d, dict) or not d.get("sweep") or not isinstance(d.get("search"), dict):
            raise InputError('pack: "search" must be {"sweep": ID, "search": {"rungs": [...], "eta": E, "z": Z}}')
        rungs = d["search"].get("rungs")
        return cls(sweep=str(d["sweep"]), search=Search.parse(d["search"], max_steps=rungs[-1] if rungs else None))

    def to_dict(self) -> dict:
        return {"sweep": self.sweep, "search": self.search.to_dict()}

    @property
    def path(self) -> Path:
        return record_path(self.sweep)

    def record(self) -> dict:
        path = self.path
        return runs.read_json(path) if path.exists() else {"sweep": self.sweep, "search": self.search.to_dict(),
                                                           "rungs": [], "packed": True}

    def write(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        runs.write_json(self.path, record)

    @staticmethod
    def dropped(record: dict) -> dict[str, str]:
        """{ratio: why its arms left the search at a rung before the last} of a record."""
        return {d["arm"]: f"stopped at rung {entry['rung']} ({entry['steps']} steps): {d['reason']}"
                for entry in record["rungs"] if not entry["final"] for d in entry["decisions"] if not d["keep"]}


def ratio_of(train) -> str:
    from toolkit.calculator.spec import Ratio

    return str(Ratio.parse(train.ratio))


class RungJudge:
    """`train_pack(at_rung=...)` of a pack with a search: evaluate each arm's snapshot here, decide the rung."""

    def __init__(self, search: PackSearch, evaluations: dict, *, log):
        self.search, self.evaluations, self.log = search, evaluations, log
        """evaluations: {run folder (resolved str): EvalSettings of the arm's evaluation}"""
        self.dropped = PackSearch.dropped(search.record())
        """{ratio: why} of the ratios out of the search (read once; kept up to date by the rungs decided here)"""

    def leave(self, train) -> str | None:
        """`train_pack(leave=...)`: why this arm is out of the search (its ratio dropped at an earlier rung, as
        recorded before a restart), else None; asked for every arm at every step, so it reads no file."""
        return self.dropped.get(ratio_of(train))

    def __call__(self, step: int, reached: list) -> dict[str, str]:
        from toolkit.evaluation.evaluate import evaluate_loaded, prepare_adapter_evaluation
        from toolkit.training.modeling import default_device, resolve_precision

        search = self.search.search
        rung = search.rungs.index(step) + 1
        record = self.search.record()
        entry = next((r for r in record["rungs"] if r["rung"] == rung), None)
        if entry is None:
            device = default_device()
            scores: dict[str, list[float]] = {}
            qse: dict[str, list[float]] = {}
            for arm in reached:
                e = self.evaluations[str(Path(arm.settings.output).resolve())]
                prepared = prepare_adapter_evaluation(
                    arm.snapshot, e.dataset, split=e.split, limit=e.limit, columns=e.columns, image_dir=e.image_dir,
                    sample_seed=e.sample_seed, batch_size=e.batch_size, max_new_tokens=e.max_new_tokens,
                    holdout=e.holdout, allow_contaminated=e.allow_contaminated, images_anywhere=e.images_anywhere)
                if not prepared.done():
                    with arm.evaluating() as model:
                        evaluate_loaded(model, arm.processor, prepared,
                                        precision=resolve_precision(arm.settings.precision, device), device=device,
                                        log=self.log)
                score, se = folder_score(arm.snapshot)
                ratio = ratio_of(arm.settings)
                scores.setdefault(ratio, []).append(score)
                if se is not None:
                    qse.setdefault(ratio, []).append(se)
            entry = rung_entry(scores, pooled(scores, qse), search=search, rung=rung)
            record["rungs"].append(entry)
            self.search.write(record)
            self.dropped = PackSearch.dropped(record)
            kept = [d["arm"] for d in entry["decisions"] if d["keep"]]
            self.log(f"rung {rung} ({step} steps): keeps {', '.join(kept)}; drops "
                     + (", ".join(d["arm"] for d in entry["decisions"] if not d["keep"]) or "none"))
        self.dropped = PackSearch.dropped(record)  # (also a rung decided before a restart)
        return {Path(arm.settings.output).name: why for arm in reached if (why := self.leave(arm.settings))}


def finish(search: PackSearch, arms: list) -> dict | None:
    """The final rung's record entry from the survivors' evaluations (`arms`: PackArm with finished run folders
    and their evaluations written); None when it is already written or some survivor has no evaluation yet."""
    record = search.record()
    last = len(search.search.rungs)
    if any(r["rung"] == last for r in record["rungs"]):
        return None
    scores: dict[str, list[float]] = {}
    qse: dict[str, list[float]] = {}
    for arm in arms:
        if not runs.is_complete(arm.train.output):
            continue
        found = folder_score(arm.train.output)
        if found is None:
            return None
        ratio = ratio_of(arm.train)
        scores.setdefault(ratio, []).append(found[0])
        if found[1] is not None:
            qse.setdefault(ratio, []).append(found[1])
    if not scores:
        return None
    entry = rung_entry(scores, pooled(scores, qse), search=search.search, rung=last)
    record["rungs"].append(entry)
    search.write(record)
    return entry
