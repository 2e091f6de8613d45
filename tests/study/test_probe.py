"""The speed probe (toolkit/study/probe.py): a few real steps of a sweep's first job, measured on this machine
before anything is queued, so the time estimate exists before the first run of a model."""

from __future__ import annotations

import json
import sys

import pytest

from tests.helpers.jobs import demo_spec, rows_written
from toolkit.errors import CmbaError, InputError
from toolkit.study import probe
from toolkit.study.estimate import JobCost, estimate_sweep, measured_here
from toolkit.study.measured import FILE, RunRecord, saved_probes
from toolkit.study.sweep import plan_sweep
from toolkit.training.settings import EvalSettings, TrainSettings


def test_the_probe_runs_the_first_training_job_shortened_into_its_own_folder(tmp_path, demo_structure):  # noqa: F811
    plan = plan_sweep(demo_spec(ratios="1:4:1,1:1:1", eval_limit=100), structure=demo_structure)
    name, train, evaluate = probe.probe_settings(plan, tmp_path)
    job = next(j for j in plan.jobs if j.kind == "train")
    original = job.settings["train"]
    assert name == job.name and train["output"] == str(tmp_path / "adapter") != original["output"]
    assert train["max_steps"] == probe.PROBE_STEPS < original["max_steps"]
    for key in ("model", "dataset", "ratio", "batch_size", "grad_accum", "lr", "budget_rank", "expect_lora_sha256"):
        assert train[key] == original[key], key  # what makes a step cost what it costs is the job's own
    assert train["checkpoint_every"] > train["max_steps"] and not train["resume"]
    assert evaluate["adapter"] == train["output"] and evaluate["limit"] == 32  # one evaluation batch
    TrainSettings.from_dict(train), EvalSettings.from_dict(evaluate)  # both valid as the commands will read them
    short = plan_sweep(demo_spec(ratios="1:1:1", train={"max_steps": 3, "batch_size": 4}, eval_limit=5),
                       structure=demo_structure)
    _, train, evaluate = probe.probe_settings(short, tmp_path)
    assert train["max_steps"] == 3 and evaluate["limit"] == 5  # never more than the sweep's own
    _, _, evaluate = probe.probe_settings(plan_sweep(demo_spec(ratios="1:1:1", evaluate=False),
                                                     structure=demo_structure), tmp_path)
    assert evaluate is None


def test_a_slurm_sweep_is_not_probed_here(tmp_path, demo_structure):  # noqa: F811
    import dataclasses

    plan = plan_sweep(demo_spec(ratios="1:1:1"), structure=demo_structure)
    plan = dataclasses.replace(plan, spec=dataclasses.replace(plan.spec, executor="slurm"))  # no cluster needed
    with pytest.raises(InputError, match=r"^measure: the jobs of this sweep run on slurm, not on this machine"):
        probe.probe_settings(plan, tmp_path)


def test_a_failing_step_is_one_line_naming_it_and_its_last_output():
    lines = []
    argv = [sys.executable, "-c", "print('loading'); print('error: dataset: no such split'); raise SystemExit(2)"]
    with pytest.raises(CmbaError) as caught:
        probe.run_step(argv, name="train", log=lines.append)
    assert str(caught.value) == "measure: `train` of the probe exited 2: error: dataset: no such split"
    assert lines == ["loading", "error: dataset: no such split"]


def test_the_probe_does_not_show_its_throwaway_accuracy():
    lines = []
    argv = [sys.executable, "-c", "print('evaluated 32/32 questions'); "
            "print('adapter x: VQA accuracy 40.62 on 32 questions of synthetic:shapes (validation)')"]
    probe.run_step(argv, name="evaluate", log=lines.append)
    assert lines == ["evaluated 32/32 questions"]  # a few steps on 32 questions: not an accuracy to read


def test_saved_probes_are_read_back_and_counted_apart_from_runs(tmp_path):
    record = RunRecord(model="demo", gpu=False, s_per_sample=0.01, s_per_question=0.02, overhead_s=5.0,
                       source="probe")
    probe.save(probe.Probe(record=record, steps=6, batch_size=16, questions=32, device="cpu", wall_s=12.0,
                           created=1.0), tmp_path)
    with open(tmp_path / FILE, "a") as f:
        f.write("not json\n" + json.dumps({"model": "demo", "gpu": False, "s_per_sample": -1}) + "\n{\"model\": 3}\n")
    assert saved_probes(tmp_path) == [record]  # the broken and the nonsensical lines are skipped
    jobs = [JobCost(model="demo", gpu=False, steps=100, batch_size=16, questions=32)] * 2
    run = RunRecord(model="demo", gpu=False, s_per_sample=0.02, s_per_question=0.02, overhead_s=7.0)
    assert estimate_sweep(jobs, saved_probes(tmp_path), slots=1).basis == "from 1 probe(s) of demo on CPU here"
    assert (estimate_sweep(jobs, [run, *saved_probes(tmp_path)], slots=1).basis
            == "from 1 earlier run(s) and 1 probe(s) of demo on CPU here")
    assert estimate_sweep([JobCost(model="demo", gpu=True, steps=100, batch_size=16)], saved_probes(tmp_path),
                          slots=1) is None  # a CPU probe says nothing of a GPU


@pytest.mark.training  # a real probe: 6 demo steps and 32 answers in child processes, about 20 s
def test_sweep_measure_trains_a_few_steps_here_and_the_estimate_rests_on_them(env, run_cli, tmp_path):  # noqa: F811
    argv = ("sweep", "--model", "demo", "--dataset", "synthetic:shapes", "--ratios", "1:1:1,1:4:1", "--seeds", "2",
            "--budget-rank", "8", "--max-steps", "300", "--batch-size", "8", "--eval-limit", "100",
            "--gpus-per-job", "0", "--dry-run", "--json")
    code, out, _ = run_cli(*argv)
    assert code == 0 and json.loads(out)["estimate"] is None  # nothing measured here yet
    code, out, err = run_cli(*argv, "--measure")
    assert code == 0, err
    doc = json.loads(out)
    assert "probe: training 6 step(s) of demo-r1-1-1-b8-s0" in err and "probe: measured on cpu in " in err
    [line] = (env.jobs / FILE).read_text().splitlines()
    measured = json.loads(line)
    assert measured["steps"] == 6 and measured["batch_size"] == 8 and measured["questions"] == 32
    assert measured["s_per_sample"] > 0 and measured["s_per_question"] > 0 and measured["overhead_s"] > 0
    # the probe's own time splits into its parts: 6 steps, 32 answers and the fixed cost of a job
    parts = measured["overhead_s"] + 6 * 8 * measured["s_per_sample"] + 32 * measured["s_per_question"]
    assert parts == pytest.approx(measured["wall_s"], rel=0.01)
    est = doc["estimate"]
    assert est["basis"] == "from 1 probe(s) of demo on CPU here" and 0 < est["low_s"] <= est["high_s"]
    # 4 training jobs of 300 steps and the reference evaluation, each at least its measured training or answering
    assert est["low_s"] >= 300 * 8 * measured["s_per_sample"] * 4 / est["slots"]
    assert rows_written(env.jobs) == 0 and not list(env.adapters.glob("*"))  # a dry run queued and kept nothing
    assert [r.source for r in measured_here(env.store)] == ["probe"]


def test_a_probe_beside_running_jobs_is_said_to_measure_a_busy_machine(env, monkeypatch):  # noqa: F811
    import os

    from toolkit.queue.store import WorkerInfo

    cores = os.cpu_count() or 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.8 * cores + 0.1, 0.0, 0.0))  # other programs load the CPU
    assert probe.busy_note(env.store).startswith(f"this machine is busy (load {0.8 * cores + 0.1:.1f} on {cores} cores)")
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # a quiet machine
    assert probe.busy_note(env.store) is None
    env.job("a")
    env.job("b")
    assert probe.busy_note(env.store) is None  # queued jobs do not load the machine
    env.store.claim(WorkerInfo(id="w", pid=os.getpid(), start_time=None, host="h"))
    assert probe.busy_note(env.store) == ("1 job(s) are running here: the probe shares the machine with them, so "
                                          "the speed it measures is that of a busy machine")


def test_a_sweep_that_would_fail_is_not_probed(env, monkeypatch, tmp_path):  # noqa: F811
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    plan = plan_sweep(demo_spec(model="llava-1.5-7b", ratios="1:1:1", seeds=1))
    with pytest.raises(InputError, match=r"^measure: nothing to measure, the sweep would fail: model: the preset "
                                         r"'llava-1.5-7b' is the config of llava-hf/llava-1.5-7b-hf"):
        probe.measure(plan, log=pytest.fail, scratch=tmp_path)  # refused before any process starts
    assert not list(tmp_path.glob("cmba-probe-*"))
