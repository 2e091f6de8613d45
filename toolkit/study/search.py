"""What a successive-halving search is (its rungs, eta and noise rule) and the steps of one rung's job.

    s = Search.parse("halving", max_steps=300)      # rungs 75, 150, 300 (eta 2), noise-aware with z = 1.96
    steps, adapter = rung_steps(train, evaluate, until=75, python=PYTHON)   # train to step 75, evaluate there

Planning a sweep (toolkit.study.sweep) needs both to queue a search's first rung; the controller that decides
the rungs and queues the next ones is toolkit.study.halving.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from toolkit.errors import InputError
from toolkit.runs import snapshot_dir

Z_DEFAULT = 1.96
RUNG_HOOK = "toolkit.study.halving:on_rung_job_finished"
"""the follow-up hook (toolkit.queue.hooks) every rung job names: the controller decides the rung and queues the next"""


@dataclass(frozen=True)
class Search:
    """A successive-halving search: the rungs (optimizer steps of the full schedule) and how many survive."""

    rungs: tuple[int, ...]
    """increasing step counts; the last one is the runs' max steps"""
    eta: float = 2.0
    """keep about 1/eta of the arms at each rung (before the noise rule keeps more)"""
    z: float = Z_DEFAULT
    """an arm is dropped only when it is behind the weakest kept arm by more than z standard errors"""
    kind: str = "halving"
    confirm: bool = True
    """after the last rung, queue the recommended ratio and 1:1:1 with fresh seeds (toolkit.study.confirm)"""
    report_split: str | None = None
    """the split the confirmation is evaluated on (None: 'test')"""
    controls: bool = False
    """with the confirmation, queue the learning-rate control and the alpha-rule axis (toolkit.study.confirm)"""

    def __post_init__(self):
        if self.kind != "halving":
            raise InputError(f"search: only 'halving' is supported, got '{self.kind}'")
        if len(self.rungs) < 2 or any(not isinstance(r, int) or r < 1 for r in self.rungs) \
                or list(self.rungs) != sorted(set(self.rungs)):
            raise InputError(f"rungs: give at least two increasing step counts, e.g. 100,200,300, got {list(self.rungs)}")
        if not (isinstance(self.eta, int | float) and self.eta > 1):
            raise InputError(f"eta: must be a number > 1, got {self.eta!r}")
        if not (isinstance(self.z, int | float) and self.z >= 0):
            raise InputError(f"z: must be a number >= 0, got {self.z!r}")

    @classmethod
    def parse(cls, value, *, max_steps=None, rungs=None, eta=None, z=None, confirm=None, report_split=None,
              controls=None) -> Search:
        """'halving' (or a dict of fields) for a sweep of `max_steps`; rungs default to max_steps / eta^k."""
        d = dict(value) if isinstance(value, dict) else {"kind": str(value).strip().lower()}
        if d.get("kind", "halving") != "halving":
            raise InputError(f"search: only 'halving' is supported, got '{d.get('kind')}'")
        eta = float(eta if eta is not None else d.get("eta", 2.0))
        z = float(z if z is not None else d.get("z", Z_DEFAULT))
        if not eta > 1:
            raise InputError(f"eta: must be a number > 1, got {eta:g}")
        if max_steps in (None, ""):
            raise InputError("search: successive halving needs --max-steps (the full schedule of every run)")
        max_steps = int(max_steps)
        if rungs not in (None, "", []):
            items = rungs.split(",") if isinstance(rungs, str) else list(rungs)
            try:
                steps = tuple(int(str(s).strip()) for s in items if str(s).strip())
            except ValueError:
                raise InputError(f"rungs: '{rungs}' is not a list of whole numbers, e.g. 100,200,300") from None
        elif d.get("rungs"):
            steps = tuple(int(s) for s in d["rungs"])
        else:
            steps = tuple(sorted({max(1, round(max_steps / eta ** k)) for k in range(3)}))
        if steps and steps[-1] != max_steps:
            raise InputError(f"rungs: the last rung must be the max steps ({max_steps}), got {steps[-1]}")
        confirm = bool(d.get("confirm", True) if confirm is None else confirm)
        controls = bool(d.get("controls", False) if controls is None else controls)
        return cls(rungs=steps, eta=eta, z=z, confirm=confirm, report_split=report_split or d.get("report_split"),
                   controls=controls)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "rungs": list(self.rungs), "eta": self.eta, "z": self.z, "confirm": self.confirm,
                "report_split": self.report_split, "controls": self.controls}


def rung_steps(train: dict, evaluate: dict | None, *, until: int, python: str,
               retrieval: tuple = ()) -> tuple[tuple[tuple[str, ...], ...], str]:
    """(steps, evaluated adapter folder) of one job training `train` (TrainSettings dict) to step `until`;
    `retrieval` (the sweep's alignment steps of the final adapter) runs after the last rung only."""
    last = until == train["max_steps"]
    adapter = train["output"] if last else str(snapshot_dir(train["output"], until))
    blob = json.dumps(train, sort_keys=True, separators=(",", ":"))
    steps = [(python, "-m", "toolkit.study.rung", "--settings-json", blob, "--until", str(until), "--snapshot", adapter)]
    if evaluate is not None:
        steps.append((python, "-m", "toolkit", "evaluate", "--settings-json",
                      json.dumps({**evaluate, "adapter": adapter}, sort_keys=True, separators=(",", ":"))))
    return tuple(steps) + (tuple(retrieval) if last else ()), adapter
