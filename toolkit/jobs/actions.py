"""What a user does to a whole sweep: cancel every job still to run, retry every one that failed or was cancelled.

    cancel_sweep(store, "3f2a9c1e")     # -> ids of the jobs cancelled or asked to stop
    retry_sweep(store, "3f2a9c1e")      # -> ids of the jobs queued again (they resume from their checkpoints)

One job at a time goes through the store's own `request_cancel` / `retry`, so a sweep action means exactly
what the per-job ones mean; a job that finished between the listing and its turn is skipped.
"""

from __future__ import annotations

from toolkit.errors import InputError
from toolkit.jobs.store import JobState, JobStore

UNFINISHED = (JobState.QUEUED, JobState.RUNNING)
RETRYABLE = (JobState.FAILED, JobState.CANCELLED)


def cancel_sweep(store: JobStore, sweep: str) -> list[str]:
    """Cancel the sweep's queued jobs and ask its running ones to stop; the ids acted on."""
    done = []
    for job in store.list(sweep=store.resolve_sweep(sweep), states=UNFINISHED):
        try:
            store.request_cancel(job.id)
        except InputError:  # finished meanwhile
            continue
        done.append(job.id)
    return done


def retry_sweep(store: JobStore, sweep: str) -> list[str]:
    """Queue the sweep's failed and cancelled jobs again (fresh attempt counts); the ids acted on."""
    done = []
    for job in store.list(sweep=store.resolve_sweep(sweep), states=RETRYABLE):
        try:
            store.retry(job.id)
        except InputError:  # retried meanwhile
            continue
        done.append(job.id)
    return done
