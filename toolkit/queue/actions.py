"""What a user does to a whole sweep: cancel every job still to run, retry every one that failed or was cancelled.

    cancel_sweep(store, "3f2a9c1e")     # -> ids of the jobs cancelled or asked to stop
    retry_sweep(store, "3f2a9c1e")      # -> ids of the jobs queued again (they resume from their checkpoints)
    wait_sweep(store, "3f2a9c1e")       # -> {state: n} once every job has finished (`sweep --wait`)

One job at a time goes through the store's own `request_cancel` / `retry`, so a sweep action means exactly
what the per-job ones mean; a job that finished between the listing and its turn is skipped.
"""

from __future__ import annotations

import time

from toolkit.errors import InputError
from toolkit.queue.states import JobState
from toolkit.queue.store import JobStore

UNFINISHED = (JobState.QUEUED, JobState.RUNNING)
RETRYABLE = (JobState.FAILED, JobState.CANCELLED)


def _each(store: JobStore, sweep: str, states, act) -> list[str]:
    """`act(job id)` on the sweep's jobs in `states`; the ids acted on (one that changed state meanwhile is skipped)."""
    done = []
    for job in store.list(sweep=store.resolve_sweep(sweep), states=states):
        try:
            act(job.id)
        except InputError:  # finished, or retried, meanwhile
            continue
        done.append(job.id)
    return done


def cancel_sweep(store: JobStore, sweep: str) -> list[str]:
    """Cancel the sweep's queued jobs and ask its running ones to stop; the ids acted on."""
    return _each(store, sweep, UNFINISHED, store.request_cancel)


def retry_sweep(store: JobStore, sweep: str) -> list[str]:
    """Queue the sweep's failed and cancelled jobs again (fresh attempt counts); the ids acted on."""
    return _each(store, sweep, RETRYABLE, store.retry)


def wait_sweep(store: JobStore, sweep: str, *, poll_s: float = 2.0, log=None, enabled: bool = True) -> dict[str, int]:
    """Wait until every job of the sweep has finished, with a progress bar of finished jobs (plain lines off a
    terminal, through `log`); returns {state: count}. The jobs run in the worker: this only reads the store."""
    from toolkit.progressbar import Bar

    sweep = store.resolve_sweep(sweep)
    kwargs = {"log": log} if log else {}
    jobs = store.list(sweep=sweep)
    with Bar(total=len(jobs), desc=f"sweep {sweep[:8]}", unit="job", every=1, enabled=enabled, **kwargs) as bar:
        while True:
            jobs = store.list(sweep=sweep)
            counts: dict[str, int] = {}
            for job in jobs:
                counts[job.state.value] = counts.get(job.state.value, 0) + 1
            finished = sum(job.state.finished for job in jobs)
            if finished != bar.done:
                bar.postfix.clear()  # the states now, not a running one that has since finished
                bar.update(finished - bar.done, **{k: v for k, v in sorted(counts.items())})
            if finished == len(jobs):
                return counts
            time.sleep(poll_s)
