"""The states of a job in the queue: a leaf module (it imports nothing of the toolkit), so that the store, the
worker, the exit protocol (toolkit.outcomes) and the study layer can all name a state without importing the
SQLite store.

    JobState.QUEUED.finished        # False
    JobState("failed").finished     # True
"""

from __future__ import annotations

from enum import Enum


class JobState(str, Enum):
    """Where a job is: waiting (`queued`, also while an engine such as Slurm holds it), `running`, or one of
    the three final states."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINAL


FINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
"""the states a job does not leave on its own (a user's retry queues it again)"""
