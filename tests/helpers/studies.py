"""Studies in a job store without training: sweeps queued for real, their runs' evaluations written as the worker
leaves them (tests/helpers/adapters.py) and their jobs marked succeeded.

    study = queue_study(store, "1:1:1,1:4:1,4:1:1")       # 3 seeds each, nothing run
    finish(store, study)                                    # 1:4:1 ten points above 1:1:1 on the validation tag
    finish(store, confirmation, tag=TEST_TAG)               # the confirmation, on the report split
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers.adapters import pattern, write_adapter
from toolkit.queue.states import JobState
from toolkit.queue.store import JobStore, WorkerInfo
from toolkit.study.sweep import SweepSpec, plan_sweep, submit_sweep

LEVEL = {"1:1:1": 260, "1:4:1": 300, "4:1:1": 250}
"""correct answers of 400 per ratio: 1:4:1 is 10 points above 1:1:1"""
VAL_TAG, TEST_TAG = "synthetic-shapes__val__n400", "synthetic-shapes__test__n400"


def queue_study(store: JobStore, ratios: str, *, seeds=3, name=None) -> str:
    spec = SweepSpec.build(model="demo", dataset="synthetic:shapes", ratios=ratios, budget_kind="rank", budgets="8",
                           seeds=seeds, train={"max_steps": 40}, gpus_per_job=0, reference=False, name=name)
    return submit_sweep(plan_sweep(spec), store=store).sweep_id


def finish(store: JobStore, sweep: str, tag: str = VAL_TAG) -> None:
    """Every job of `sweep` evaluated on `tag` and marked succeeded (claimed in queue order: `sweep` is first)."""
    me = WorkerInfo(id="test", pid=os.getpid(), start_time=None, host="test")
    for job in store.list(sweep=sweep):
        out = Path(job.output_dir)
        seed = job.meta["seed"]
        write_adapter(out.parent, out.name, ratio=tuple(float(x) for x in job.meta["ratio"].split(":")), seed=seed,
                      budget=110080, params=110080, tag=tag, accs=pattern(LEVEL[job.meta["ratio"]] + 3 * seed,
                                                                          offset=seed))
    while (job := store.claim(me)) is not None and job.sweep_id == sweep:
        store.finish(job.id, job.token, JobState.SUCCEEDED)
