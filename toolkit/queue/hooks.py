"""Follow-up hooks: work that a job names in its own data, called by the worker once the job has ended (as rq's
job callbacks, `on_success` / `on_failure`, are named in the job).

    NewJob(name=..., steps=..., meta={"on_finish": "toolkit.study.halving:on_rung_job_finished"})
    hook_of(job)         # "toolkit.study.halving:on_rung_job_finished" (or None)
    call(job, store)     # imports the module on first use and calls hook(store, job)

This is how the queue reaches the work above it without knowing it: a hook is an import string
`module:function`, resolved only when it is called, so nothing in toolkit.queue imports the study layer.
`hook(store, job)` gets the job as recorded, in a final state (succeeded, failed or cancelled). The worker that
records the final state calls it; until a call returns without raising, every worker's recovery pass calls it
again (the store keeps `followed_up` per job: a job cancelled straight from the queue, or a worker that died
between recording and calling, loses nothing). So a hook must be idempotent, and cheap enough for the worker's
loop (it runs in the worker's process).

Jobs queued before hooks existed (a halving search's rung jobs carried `"rung"` in their meta and the worker
special-cased them) get their hook on read (`Job.from_row`): `LEGACY_HOOKS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from toolkit.errors import InputError

ON_FINISH = "on_finish"
"""the key of a job's meta that names its follow-up hook"""
LEGACY_HOOKS = {"rung": "toolkit.study.halving:on_rung_job_finished"}
"""meta key of a job queued before hooks -> the hook that now does what the worker once did for it"""


def with_legacy_hook(meta: dict, *, sweep_id: str | None) -> dict:
    """`meta` with the hook its old shape implies (a sweep job with a legacy key and no hook), else as it is."""
    if ON_FINISH in meta or sweep_id is None:
        return meta
    for key, hook in LEGACY_HOOKS.items():
        if key in meta:
            return {**meta, ON_FINISH: hook}
    return meta


def hook_of(job) -> str | None:
    """The follow-up hook a job names (None: nothing to do after it ends)."""
    return (job.meta or {}).get(ON_FINISH) or None


def resolve(spec: str) -> Callable:
    """The function named by `module:function` (InputError when it does not resolve)."""
    module, _, name = str(spec).partition(":")
    if not module or not name:
        raise InputError(f"hook: '{spec}' is not an import string 'module:function'")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"hook: cannot import '{spec}' ({exc})") from None
    if not callable(fn):
        raise InputError(f"hook: '{spec}' is not callable")
    return fn


def call(job, store) -> bool:
    """Call the job's hook (if any) with (store, job); False when the job names none."""
    spec = hook_of(job)
    if spec is None:
        return False
    resolve(spec)(store, job)
    return True
