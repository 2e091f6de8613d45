"""Follow-up hooks (toolkit.queue.hooks): the work a job names in its data, called by the worker once the job has
ended, again by a recovery pass until it succeeds; jobs queued before hooks (a halving rung job's old meta) get
theirs on read; the module paths that old job steps name still run. In-process worker, `--once`."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from toolkit.errors import InputError
from toolkit.queue import hooks
from toolkit.queue.states import JobState
from toolkit.queue.store import JobStore, NewJob
from toolkit.queue.worker import Worker, WorkerConfig

CALLS: list[tuple[str, str]] = []
"""(job id, state) of every call of `record` below"""
HOOK = f"{__name__}:record"


def record(store, job) -> None:
    CALLS.append((job.id, job.state.value))


def fail_once(store, job) -> None:
    if not any(c[0] == job.id for c in CALLS):
        CALLS.append((job.id, "raised"))
        raise ValueError("not yet")
    CALLS.append((job.id, job.state.value))


@pytest.fixture
def store(tmp_path):
    CALLS.clear()
    return JobStore(tmp_path / "jobs")


def _run_once(store: JobStore) -> None:
    assert Worker(store, WorkerConfig(gpus="none", slots=1, once=True, poll_s=0.05)).run() == 0


def test_the_worker_calls_the_hook_a_job_names_once_it_has_ended(store):
    ok = store.submit(NewJob(name="ok", steps=[["{python}", "-c", "pass"]], meta={"on_finish": HOOK}))
    bad = store.submit(NewJob(name="bad", steps=[["{python}", "-c", "raise SystemExit(1)"]], meta={"on_finish": HOOK},
                              max_attempts=1))
    plain = store.submit(NewJob(name="plain", steps=[["{python}", "-c", "pass"]]))
    _run_once(store)
    assert sorted(CALLS) == sorted([(ok.id, "succeeded"), (bad.id, "failed")])
    assert store.get(ok.id).followed_up and store.get(bad.id).followed_up and not store.get(plain.id).followed_up
    assert store.pending_follow_ups() == []


def test_a_job_that_ends_without_a_worker_is_followed_up_by_the_next_recovery_pass(store):
    job = store.submit(NewJob(name="queued", steps=[["{python}", "-c", "pass"]], meta={"on_finish": HOOK}))
    assert store.request_cancel(job.id).state is JobState.CANCELLED  # straight from the queue: no worker saw it
    assert [j.id for j in store.pending_follow_ups()] == [job.id]
    Worker(store, WorkerConfig(gpus="none", slots=1)).recover()
    assert CALLS == [(job.id, "cancelled")] and store.pending_follow_ups() == []
    store.retry(job.id)  # a new run of the job: its hook is due again when it ends
    assert not store.get(job.id).followed_up


def test_a_failing_hook_is_logged_and_called_again_until_it_succeeds(store):
    job = store.submit(NewJob(name="j", steps=[["{python}", "-c", "pass"]], meta={"on_finish": f"{__name__}:fail_once"}))
    _run_once(store)
    assert CALLS == [(job.id, "raised")] and not store.get(job.id).followed_up
    Worker(store, WorkerConfig(gpus="none", slots=1)).recover()
    assert CALLS[-1] == (job.id, "succeeded") and store.get(job.id).followed_up


def test_a_halving_job_queued_before_hooks_gets_the_controller_as_its_hook(store):
    """Old rung jobs carried "rung" in their meta and the worker special-cased them; now the store maps that shape
    to the hook on read, so they advance their search as before."""
    _, (old, lone) = store.submit_sweep("s" * 16, {"search": {"rungs": [10, 20]}}, [
        NewJob(id="ssssssss-01", name="old", steps=[["true"]], meta={"ratio": "1:1:1", "rung": 1}),
        NewJob(id="ssssssss-02", name="not-a-rung", steps=[["true"]], meta={"ratio": "1:1:1"})])
    assert old.meta["on_finish"] == "toolkit.study.halving:on_rung_job_finished" == hooks.LEGACY_HOOKS["rung"]
    assert "on_finish" not in lone.meta
    store.request_cancel(old.id)
    assert [j.id for j in store.pending_follow_ups()] == [old.id]
    assert hooks.resolve(hooks.hook_of(old)).__module__ == "toolkit.study.halving"


def test_hooks_are_import_strings_checked_when_called():
    with pytest.raises(InputError, match="not an import string"):
        hooks.resolve("toolkit.study.halving")
    with pytest.raises(InputError, match="cannot import"):
        hooks.resolve("toolkit.study.halving:no_such_function")
    assert hooks.resolve(HOOK) is record


def test_a_store_of_schema_3_gains_the_follow_up_column(tmp_path):
    JobStore(tmp_path).submit(NewJob(name="old", steps=[["true"]]))
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        db.execute("ALTER TABLE jobs DROP COLUMN followed_up")
        db.execute("PRAGMA user_version = 3")
    store = JobStore(tmp_path)
    assert store.list()[0].followed_up is False


@pytest.mark.parametrize("module", ["toolkit.jobs.rung", "toolkit.study.rung"])
def test_the_rung_step_of_jobs_queued_before_the_split_still_runs(module):
    r = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--until" in r.stdout
