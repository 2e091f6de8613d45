"""Pre-flight checks of a sweep (toolkit/study/preflight.py), its time estimate (toolkit/study/estimate.py), loss
smoothing and sweep-level cancel / retry (toolkit/queue/actions.py), without training anything."""

from __future__ import annotations

import re
import shutil

import pytest

from tests.helpers.jobs import demo_spec, rows_written
from toolkit.errors import InputError
from toolkit.queue import actions
from toolkit.queue.states import JobState
from toolkit.queue.store import NewJob
from toolkit.study.estimate import Estimate, JobCost, estimate_sweep
from toolkit.study.measured import RunRecord
from toolkit.study.preflight import preflight
from toolkit.study.progress import smooth
from toolkit.study.sweep import plan_sweep, submit_sweep
from toolkit.training.demo import DEMO_DIR


@pytest.fixture
def offline(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_preflight_names_what_would_make_every_job_fail(env, offline, tmp_path, run_cli):  # noqa: F811
    assert preflight(demo_spec()) == []  # the demo weights ship with the repository; synthetic data is always there
    problems = preflight(demo_spec(model="llava-1.5-7b"))
    assert problems == ["model: the preset 'llava-1.5-7b' is the config of llava-hf/llava-1.5-7b-hf, whose weights "
                        "are not on this machine and the Hub is unreachable (offline); train the offline `demo` "
                        "preset, or pass a local folder with weights"]
    configs_only = tmp_path / "configs-only"
    configs_only.mkdir()
    shutil.copy(DEMO_DIR / "config.json", configs_only / "config.json")
    [problem] = preflight(demo_spec(model=str(configs_only)))
    assert problem.startswith(f"model: '{configs_only}' holds a config but no weights")
    data = tmp_path / "data.jsonl"
    data.write_text('{"question_id": 1, "question": "q?", "answers": ["a"]}\n')  # no image column
    [problem] = preflight(demo_spec(dataset=str(data), eval_split=None, evaluate=False))
    assert problem.startswith("dataset: ") and "image" in problem and "\n" not in problem
    # queueing refuses it too, in one line, and writes nothing (CLI: exit 2)
    plan = plan_sweep(demo_spec(model="llava-1.5-7b", ratios="1:1:1", seeds=1))
    with pytest.raises(InputError, match=r"^model: the preset 'llava-1.5-7b' .* \(nothing was queued\)$"):
        submit_sweep(plan)
    code, out, err = run_cli("sweep", "--model", "llava-1.5-7b", "--dataset", "synthetic:shapes", "--ratios", "1:1:1",
                             "--budget-rank", "8", "--gpus-per-job", "0", "--no-worker")
    assert code == 2 and err.startswith("error: model: the preset 'llava-1.5-7b' is the config of") and err.count("\n") == 1
    code, out, _ = run_cli("sweep", "--model", "llava-1.5-7b", "--dataset", "synthetic:shapes", "--ratios", "1:1:1",
                           "--budget-rank", "8", "--gpus-per-job", "0", "--dry-run")
    assert code == 0 and "pre-flight: model: the preset 'llava-1.5-7b'" in out and "(queueing would be refused)" in out
    assert rows_written(env.jobs) == 0


def test_estimate_scales_measured_rates_and_spreads_jobs_over_slots():
    history = [RunRecord(model="demo", gpu=False, s_per_sample=0.01, s_per_question=0.02, overhead_s=5.0),
               RunRecord(model="demo", gpu=False, s_per_sample=0.02, s_per_question=0.02, overhead_s=7.0)]
    jobs = [JobCost(model="demo", gpu=False, steps=100, batch_size=16, questions=50)] * 4
    est = estimate_sweep(jobs, history, slots=2)
    # per job: overhead median 6 s + 1,600 samples x 0.01..0.02 s + 50 questions x 0.02 s = 23..39 s; 2 jobs a slot
    assert (est.low_s, est.high_s) == pytest.approx((46.0, 78.0))
    assert est.text() == "about 0.8–1.3 min for 4 job(s) on 2 slot(s) (from 2 earlier run(s) of demo on CPU here)"
    assert estimate_sweep(jobs, history, slots=4).high_s == pytest.approx(39.0)
    assert estimate_sweep(jobs, [RunRecord(model="demo", gpu=True, s_per_sample=0.001)], slots=1) is None  # no CPU runs
    assert estimate_sweep([JobCost(model="x", gpu=False, steps=1, batch_size=1)], history, slots=1) is None
    assert estimate_sweep([JobCost(model="demo", gpu=False, steps=float("inf"), batch_size=8)], history, slots=1) is None
    assert Estimate(low_s=1200, high_s=1320, jobs=10, slots=1, basis="b").text().startswith("about 20–22 min")


def test_smoothing_is_tensorboards_debiased_ema():
    assert smooth([4.0, 2.0, 3.0], 0.0) == [4.0, 2.0, 3.0]
    # EMA 2, 2, 2.5 divided by 1 - 0.5^n: 4, 8/3, 20/7
    assert smooth([4.0, 2.0, 3.0], 0.5) == pytest.approx([4.0, 8 / 3, 20 / 7])
    flat = smooth([1.0] * 50, 0.9)
    assert flat == pytest.approx([1.0] * 50)  # debiased: a constant stays constant from the first point
    with pytest.raises(InputError, match="smoothing: must be in"):
        smooth([1.0], 1.0)


def test_sweep_cancel_and_retry_act_on_every_job(env, demo_structure, run_cli):  # noqa: F811
    from tests.helpers.jobscript import job_steps

    plan = plan_sweep(demo_spec(ratios="1:1:1,1:4:1", seeds=1, evaluate=False), structure=demo_structure)
    env.store.submit_sweep(plan.sweep_id, plan.spec.normalised(), [
        NewJob(id=j.id, name=j.name, steps=job_steps(j.output_dir, steps=3), output_dir=j.output_dir)
        for j in plan.jobs])
    assert sorted(actions.cancel_sweep(env.store, plan.short_id)) == [j.id for j in plan.jobs]
    assert {j.state for j in env.store.list(sweep=plan.sweep_id)} == {JobState.CANCELLED}
    assert actions.cancel_sweep(env.store, plan.short_id) == []  # nothing left to cancel
    assert sorted(actions.retry_sweep(env.store, plan.short_id)) == [j.id for j in plan.jobs]
    assert {(j.state, j.retries) for j in env.store.list(sweep=plan.sweep_id)} == {(JobState.QUEUED, 1)}
    with pytest.raises(InputError, match="sweep: no sweep 'zzz'"):
        actions.retry_sweep(env.store, "zzz")
    # the CLI: `jobs cancel --sweep` / `jobs retry --sweep`
    code, out, _ = run_cli("jobs", "cancel", "--sweep", plan.short_id)
    assert code == 0 and out.startswith(f"sweep {plan.short_id}: cancel requested for 2 job(s)")
    code, out, _ = run_cli("jobs", "retry", "--sweep", plan.short_id, "--no-worker")
    assert code == 0 and out.startswith(f"sweep {plan.short_id}: 2 job(s) queued again")
    code, _, err = run_cli("jobs", "cancel", "--sweep", "zzz")
    assert code == 2 and err.startswith("error: sweep: no sweep 'zzz'") and err.count("\n") == 1


def test_waiting_on_a_sweep_reports_finished_jobs_until_all_are(env, demo_structure):  # noqa: F811
    from tests.helpers.jobscript import PATIENCE, job_steps

    plan = plan_sweep(demo_spec(ratios="1:1:1,1:4:1", seeds=1, evaluate=False), structure=demo_structure)
    ok, bad = plan.jobs
    env.store.submit_sweep(plan.sweep_id, plan.spec.normalised(), [
        NewJob(id=ok.id, name=ok.name, steps=job_steps(ok.output_dir, steps=3), output_dir=ok.output_dir),
        NewJob(id=bad.id, name=bad.name, steps=job_steps(bad.output_dir, "--fail-at", "2", steps=3),
               output_dir=bad.output_dir)])
    worker = env.worker("--slots", "1")
    lines: list[str] = []
    counts = actions.wait_sweep(env.store, plan.short_id, poll_s=0.05, log=lines.append, enabled=False)
    assert counts == {"succeeded": 1, "failed": 1}
    assert lines[-1] == f"sweep {plan.short_id}: 2/2 job, failed 1, succeeded 1"  # one line per finished job
    assert len(lines) in (1, 2) and all(line.startswith(f"sweep {plan.short_id}: ") for line in lines)
    worker.terminate()
    worker.wait(PATIENCE)


def test_adapters_trained_without_a_job_count_as_measurements(env, tmp_path):  # noqa: F811
    from tests.helpers.adapters import pattern, write_adapter
    from toolkit.study.estimate import measured_here

    write_adapter(env.adapters, "by-hand", accs=pattern(200), training={"batch_size": 4, "grad_accum": 2})
    [record] = measured_here(env.store)  # cmba.json: 10 steps in 12.5 s; results: 400 questions in 3.0 s
    assert record == RunRecord(model="demo", gpu=False, s_per_sample=12.5 / (10 * 4 * 2), s_per_question=3.0 / 400)


def test_time_left_counts_what_each_unfinished_job_still_has_to_do(env, demo_structure, run_cli):  # noqa: F811
    import dataclasses
    from pathlib import Path

    from toolkit import runs
    from toolkit.study.estimate import plan_jobs, time_left

    plan = plan_sweep(demo_spec(ratios="1:1:1,1:4:1", seeds=1, train={"max_steps": 100, "batch_size": 4},
                                eval_limit=50), structure=demo_structure)
    jobs = submit_sweep(plan, preflight=False).jobs
    first, second, reference = jobs
    history = [RunRecord(model="demo", gpu=False, s_per_sample=0.01, s_per_question=0.1, overhead_s=5.0)]
    # nothing started: what the launch form estimated (training 100 x 4 x 0.01 + 50 answers x 0.1 + 5 s each)
    left = time_left(jobs, history, slots=1)
    assert left.low_s == left.high_s == pytest.approx(14 + 14 + 10)
    assert (left.low_s, left.high_s) == pytest.approx(
        (lambda e: (e.low_s, e.high_s))(estimate_sweep(plan_jobs(plan), history, slots=1)))
    assert left.left_text() == "about 0.6 min for 3 unfinished job(s) on 1 slot(s)"
    assert left.left_text(search=True).endswith("on 1 slot(s) queued so far (the search queues each next rung when "
                                                "the current one ends)")
    # another sweep's two jobs queued first hold the one slot before these: their time counts, and is said
    behind = time_left([second], history, slots=1, ahead=[first, reference])
    assert behind.low_s == pytest.approx(14 + 14 + 10) and behind.jobs == 1 and behind.ahead == 2
    assert behind.left_text() == "about 0.6 min for 1 unfinished job(s) on 1 slot(s), behind 2 job(s) of other " \
                                 "sweeps queued first"
    # the first job trains (step 50 of 100, 4 s so far, its own ETA 2 s): its ETA and its answers are left; its
    # own rate (0.02 s a sample) widens what the queued job may take
    running = dataclasses.replace(first, state=JobState.RUNNING, step_index=0)
    Path(first.output_dir).mkdir(parents=True)
    runs.append_metric(first.output_dir, runs.MetricLine(step=50, max_steps=100, elapsed_s=4.0, eta_s=2.0))
    left = time_left([running, second, reference], history, slots=2)
    assert (left.low_s, left.high_s) == pytest.approx((7 + 10, 5 + 100 * 4 * 0.02 + 5))  # ref follows the first job
    # in its evaluate step: its answers alone are left
    evaluating = dataclasses.replace(running, step_index=1)
    assert time_left([evaluating], history, slots=1).low_s == pytest.approx(5)
    # no measured answer rate: it cannot be told
    assert time_left(jobs, [dataclasses.replace(history[0], s_per_question=None)], slots=1) is None
    done = [dataclasses.replace(j, state=JobState.SUCCEEDED) for j in jobs]
    assert time_left(done, history, slots=1).left_text() == "every job has ended"
    # `jobs list --sweep` ends with it, from what was measured here (nothing, then a probe)
    code, out, _ = run_cli("jobs", "list", "--sweep", plan.short_id)
    assert code == 0 and out.splitlines()[-1].startswith("time left: not known yet (no measured rate of this model")
    from toolkit.study import probe

    probe.save(probe.Probe(record=history[0], steps=6, batch_size=4, questions=32, device="cpu", wall_s=9.0,
                           created=0.0), env.jobs)
    code, out, _ = run_cli("jobs", "list", "--sweep", plan.short_id)
    assert code == 0 and re.fullmatch(r"time left: about [\d.]+ min for 3 unfinished job\(s\) on \d+ slot\(s\)",
                                      out.splitlines()[-1]), out


def test_a_whole_synthetic_split_is_counted_and_an_unread_hub_split_is_not():
    from toolkit.study.estimate import job_cost

    ev = {"dataset": "synthetic:shapes?n=300", "split": "validation"}
    assert job_cost({"evaluate": ev}, model="demo", gpu=False).questions == 300  # no --eval-limit: the split's size
    assert job_cost({"evaluate": {**ev, "limit": 50}}, model="demo", gpu=False).questions == 50
    hub = job_cost({"evaluate": {"dataset": "lmms-lab/VQAv2", "split": "validation"}}, model="demo", gpu=False)
    assert hub.questions == float("inf")  # not read here: no estimate rather than a wrong one
