"""One study followed from design to answer (toolkit.study.report, `python -m toolkit study`): provisional while
any job of it or of its confirmation is unfinished, the queue ahead of it counted, its confirmation found, and the
confirmation's outcome as the final answer. The runs' evaluations are written as the worker leaves them (no
training: tests/helpers/adapters.py)."""

from __future__ import annotations

import json
import os

import pytest

from tests.helpers.studies import TEST_TAG, finish, queue_study
from toolkit.queue.states import JobState
from toolkit.queue.store import JobStore, WorkerInfo
from toolkit.study import report
from toolkit.study.confirm import queue_confirmation


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("CMBA_JOBS_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(tmp_path / "adapters"))
    return JobStore()


@pytest.mark.slow  # three recommendations and a confirmation analysis: bootstraps (about 10 s on a quiet machine)
def test_a_study_is_provisional_until_its_confirmation_ends_and_then_its_answer_is_the_confirmation(store):
    other = queue_study(store, "1:1:1", seeds=2, name="someone-else")  # queued first: served before the study
    study = queue_study(store, "1:1:1,1:4:1,4:1:1")
    rep = report.study_report(store, study[:8], recommend=False)
    assert rep["final"]["state"] == "provisional" and rep["progress"]["unfinished"] == 9
    assert rep["progress"]["ahead"] == 2  # the other sweep's jobs hold the slots first
    assert rep["design"]["ratios"] == ["1:1:1", "1:4:1", "4:1:1"] and rep["design"]["seeds"] == [0, 1, 2]
    assert [w["id"] for w in report.studies(store)] == [study, other]

    me = WorkerInfo(id="test", pid=os.getpid(), start_time=None, host="test")
    for _ in range(2):  # the other sweep's jobs, first in the queue
        job = store.claim(me)
        assert job.sweep_id == other
        store.finish(job.id, job.token, JobState.SUCCEEDED)
    finish(store, study)
    rep = report.study_report(store, study, n_boot=500)
    assert rep["progress"]["unfinished"] == 0 and rep["progress"]["ahead"] == 0
    assert rep["recommendation"]["ratio"] == "1:4:1" and rep["final"]["state"] == "recommendation"
    assert "python -m toolkit confirm --sweep" in rep["final"]["text"]

    plan, _ = queue_confirmation(store, study)
    assert plan.spec.confirms == study and report.confirmation_sweeps(store, study) == [plan.sweep_id]
    assert [w["id"] for w in report.studies(store)] == [study, other]  # a confirmation is not a study of its own
    assert report.study_report(store, study, n_boot=500)["final"]["state"] == "provisional"
    finish(store, plan.sweep_id, tag=TEST_TAG)  # the report split
    rep = report.study_report(store, study, n_boot=500)
    assert rep["final"]["state"] == "confirmed" and rep["final"]["text"].startswith("confirmed: use 1:4:1")
    assert rep["confirmation"]["delta"] == pytest.approx(10.0, abs=1.0)


def test_the_study_command_prints_the_answer_of_the_newest_study(store, run_cli):
    study = queue_study(store, "1:1:1,1:4:1,4:1:1")
    finish(store, study)
    code, out, _ = run_cli("study")
    assert code == 0 and f"study {study[:8]}" in out and "answer: use about 1:4:1" in out
    code, out, _ = run_cli("confirm", "--sweep", study[:8], "--no-worker", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ratio"] == "1:4:1" and doc["ratios"] == ["1:1:1", "1:4:1"]
    assert len(doc["seeds"]) >= 3 and min(doc["seeds"]) == 3  # fresh seeds after the study's 0-2, sized by power
    code, _, err = run_cli("study", "--sweep", "nope")
    assert code == 2 and err.count("\n") == 1 and "sweep" in err
