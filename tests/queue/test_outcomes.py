"""The exit protocol (toolkit/outcomes.py): exit codes, how an ended run maps to a job state and reason, and
the real processes that speak it (the CLI, the Slurm in-job runner run without Slurm).

The runner tests start `python -m toolkit.queue.slurm.runner run job.json` as a real subprocess; outside a
Slurm job it runs the steps directly (no srun), which is all these tests need.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

from toolkit.outcomes import ExitCode, Reason, decide, describe_exit, is_interrupted, retryable, shell_status
from toolkit.queue.slurm.executor import step_launch
from toolkit.queue.slurm.runner import legacy_step_nodes, step_nodes
from toolkit.queue.states import JobState

ROOT = Path(__file__).resolve().parents[2]


def test_exit_codes_are_the_documented_numbers():
    assert [int(c) for c in (ExitCode.SUCCESS, ExitCode.FAILURE, ExitCode.BAD_INPUT, ExitCode.OUT_OF_MEMORY,
                             ExitCode.INTERRUPTED)] == [0, 1, 2, 3, 143]
    assert shell_status(-signal.SIGTERM) == ExitCode.INTERRUPTED and shell_status(-9) == 137 and shell_status(3) == 3
    assert is_interrupted(143) and is_interrupted(-signal.SIGTERM) and not is_interrupted(1) and not is_interrupted(None)
    assert not retryable(Reason.OUT_OF_MEMORY) and retryable("exit code 1") and retryable(None)


@pytest.mark.parametrize("code,tail,expected", [
    (0, ["error: ignored"], (None, None)),
    (3, ["x", "error: out_of_memory: step 4"], ("out_of_memory", "error: out_of_memory: step 4")),
    (1, ["RuntimeError: CUDA out_of_memory. Tried to allocate 2 GiB"], ("out_of_memory", None)),
    (-9, [], ("killed by signal 9 (SIGKILL)", None)),
    (-63, [], ("killed by signal 63 (unknown)", None)),
    (7, ["error: dataset: first", "error: dataset: flaky", "trailing"], ("exit code 7", "error: dataset: flaky")),
])
def test_describe_exit(code, tail, expected):
    assert describe_exit(code, tail) == expected


@pytest.mark.parametrize("code,tail,kwargs,state,reason", [
    (0, [], {}, JobState.SUCCEEDED, None),
    (1, ["error: bad"], {}, JobState.FAILED, "exit code 1"),
    (3, [], {}, JobState.FAILED, "out_of_memory"),
    (143, [], {}, JobState.QUEUED, "terminated (SIGTERM)"),
    (-signal.SIGTERM, [], {}, JobState.QUEUED, "terminated (SIGTERM)"),
    (143, ["error: out_of_memory: step 2"], {}, JobState.FAILED, "out_of_memory"),  # OOM is never retried
    (143, [], {"shutdown": True}, JobState.QUEUED, "worker stopped"),
    (143, [], {"cancelling": True}, JobState.CANCELLED, "cancelled by user"),
    (-9, [], {"engine_reason": "preempted", "engine_resume": True}, JobState.QUEUED, "preempted"),
    (None, [], {"engine_resume": True}, JobState.QUEUED, "requeued by the engine"),
    (125, [], {"engine_reason": "out_of_memory", "engine_resume": True}, JobState.FAILED, "out_of_memory"),
    (15, [], {"engine_reason": "cancelled in Slurm (scancel)", "engine_cancelled": True}, JobState.CANCELLED,
     "cancelled in Slurm (scancel)"),
    (0, [], {"engine_reason": "deadline reached"}, JobState.FAILED, "deadline reached"),
])
def test_decide_maps_an_ended_run_to_a_state_and_reason(code, tail, kwargs, state, reason):
    outcome = decide(code, tail, **kwargs)
    assert (outcome.state, outcome.reason) == (state, reason)
    assert outcome.requeue == (state is JobState.QUEUED)
    assert outcome.count_attempt == (not kwargs.get("shutdown"))


def test_outcome_keeps_the_error_line_and_the_exit_code():
    outcome = decide(1, ["Traceback", "error: dataset: flaky"])
    assert outcome.message == "error: dataset: flaky" and outcome.exit_code == 1
    assert decide(0, []).exit_code == ExitCode.SUCCESS and decide(143, [], cancelling=True).message is None


def _literals(path: Path):
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type in (tokenize.NUMBER, tokenize.STRING):
            yield tok.string, tok.start[0]


def test_no_module_but_outcomes_spells_the_exit_protocol():
    """143 as a number, and the reason strings as literals, appear in toolkit/outcomes.py only."""
    spelled = {"143", '"out_of_memory"', "'out_of_memory'", '"cancelled by user"', '"worker stopped"',
               '"worker lost"', '"terminated (SIGTERM)"', '"launch failed"'}
    found = [f"{path.relative_to(ROOT)}:{line}: {text}" for path in sorted((ROOT / "toolkit").rglob("*.py"))
             if path.name != "outcomes.py" for text, line in _literals(path) if text in spelled]
    assert found == []


def test_cli_bad_input_exits_with_the_bad_input_code():
    r = subprocess.run([sys.executable, "-m", "toolkit", "train", "--model", "demo", "--dataset", "synthetic:shapes",
                        "--ratio", "1:x:1", "--budget-rank", "8"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == ExitCode.BAD_INPUT and r.stderr.startswith("error: ratio")
    assert len(r.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ the Slurm runner (no cluster needed)

TRAIN = ["{python}", "-m", "toolkit", "train", "--resume"]
DDP = ["{python}", "-m", "toolkit.training.distributed", "--nproc-per-node", "2", "--", "-m", "toolkit", "train"]


def test_a_step_is_distributed_by_its_launch_record_not_its_command():
    assert step_launch(DDP, nodes=3) == {"launcher": "toolkit.training.distributed", "nodes": 3}
    assert step_launch(TRAIN, nodes=3) == {"launcher": None, "nodes": 1}
    # a command that merely mentions the launcher (an argument) is not a launch
    assert step_launch(["{python}", "-c", "pass", "toolkit.training.distributed"], nodes=3)["nodes"] == 1
    spec = {"steps": [DDP, TRAIN], "nodes": 3, "launch": [{"launcher": None, "nodes": 1}, {"nodes": 3}]}
    assert [step_nodes(spec, k) for k in range(2)] == [1, 3]  # the record wins over the command


def test_job_json_without_launch_records_falls_back_to_the_command():
    spec = {"steps": [DDP, TRAIN, ["{python}", "-m", "toolkit.distributed", "--", "-m", "toolkit", "train"]], "nodes": 2}
    assert [step_nodes(spec, k) for k in range(3)] == [2, 1, 2]
    assert [legacy_step_nodes(spec, k) for k in range(3)] == [2, 1, 2]


def _run_job(folder: Path, steps: list[list[str]], *, start: int = 0, module: str = "toolkit.queue.slurm.runner"):
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"job": "j1", "name": "t", "attempt": 1, "steps": steps, "start_step": start, "python": sys.executable,
            "nodes": 1, "gpus_per_node": 0, "env": {}, "cwd": str(ROOT),
            "launch": [step_launch(s, nodes=1) for s in steps]}
    (folder / "job.json").write_text(json.dumps(spec))
    r = subprocess.run([sys.executable, "-m", module, "run", str(folder / "job.json")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    return r, json.loads((folder / "progress.json").read_text())


def test_runner_records_a_step_stopped_by_sigterm_as_interrupted(tmp_path):
    steps = [["{python}", "-c", "print('first')"],
             ["{python}", "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"],
             ["{python}", "-c", "print('never')"]]
    r, progress = _run_job(tmp_path / "slurm", steps)
    assert r.returncode == ExitCode.INTERRUPTED and progress["returncode"] == ExitCode.INTERRUPTED
    assert progress["step_index"] == 1 and "never" not in r.stdout and "first" in r.stdout
    assert (tmp_path / "slurm" / "step-0.done").exists() and not (tmp_path / "slurm" / "step-1.done").exists()
    assert decide(progress["returncode"], []).state is JobState.QUEUED  # re-queued, resumes from its checkpoint


def test_runner_skips_done_steps_and_marks_the_job_done(tmp_path):
    folder = tmp_path / "slurm"
    folder.mkdir()
    (folder / "step-0.done").touch()
    steps = [["{python}", "-c", "raise SystemExit(9)"], ["{python}", "-c", "print('second')"]]
    r, progress = _run_job(folder, steps)  # the failing step 0 is already done: only step 1 runs
    assert r.returncode == 0 and progress["returncode"] == 0 and "second" in r.stdout
    assert (folder / "done").exists()
    r, progress = _run_job(folder, steps)
    assert r.returncode == 0 and "nothing to run" in r.stdout and "second" not in r.stdout


@pytest.mark.parametrize("module", ["toolkit.slurm", "toolkit.jobs.slurm.executor", "toolkit.jobs.slurm.runner"])
def test_entry_points_of_earlier_scripts_forward_to_the_runner(tmp_path, module):
    r, progress = _run_job(tmp_path / "slurm", [["{python}", "-c", "raise SystemExit(5)"]], module=module)
    assert r.returncode == 5 and progress["returncode"] == 5 and decide(5, []).reason == "exit code 5"
