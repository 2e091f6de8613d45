"""The job system running the real engine: a demo sweep job (train -> evaluate) survives kill -9 of its worker.

Slower than tests/queue/test_jobs.py (real training of the demo model), so it is kept to one scenario."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from tests.helpers.jobscript import PATIENCE, wait_for
from toolkit.queue.states import JobState

pytestmark = pytest.mark.training
STEPS = 40


def test_worker_killed_mid_training_resumes_and_finishes(env):  # noqa: F811
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from toolkit.training.demo import demo_model_dir

    r = subprocess.run([sys.executable, "-m", "toolkit", "sweep", "--model", "demo", "--dataset",
                        "synthetic:shapes?n=80", "--ratios", "1:4:1", "--budget-rank", "4", "--max-steps", str(STEPS),
                        "--batch-size", "4", "--checkpoint-every", "5", "--eval-limit", "16", "--no-reference", "--no-worker", "--json"],
                       cwd=ROOT, capture_output=True, text=True, env=os.environ.copy(), timeout=PATIENCE)
    assert r.returncode == 0, r.stderr
    [job_id] = [j["job"] for j in json.loads(r.stdout)["jobs"]]
    job = env.store.get(job_id)
    metrics = os.path.join(job.output_dir, "metrics.jsonl")

    def steps_done():
        try:
            with open(metrics) as f:
                return len(f.read().splitlines())
        except FileNotFoundError:
            return 0

    worker = env.worker("--threads", "1")
    wait_for(lambda: steps_done() >= 12, what="12 training steps")
    os.killpg(worker.pid, signal.SIGKILL)  # the worker and everything in its session group
    worker.wait()
    assert env.store.get(job_id).state is JobState.RUNNING  # nobody has noticed yet

    assert env.worker("--threads", "1", "--once").wait(timeout=PATIENCE) == 0
    job = env.store.get(job_id)
    assert job.state is JobState.SUCCEEDED, job.message
    assert job.attempts == 2
    cmba = json.loads(open(os.path.join(job.output_dir, "cmba.json")).read())
    assert cmba["result"]["steps"] == STEPS
    lines = [json.loads(x) for x in open(metrics).read().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, STEPS + 1))  # resumed, not restarted, no duplicates
    log = open(job.log_path).read()
    assert "resuming" in log and "from step" in log
    [tag] = os.listdir(os.path.join(job.output_dir, "eval"))
    results = json.loads(open(os.path.join(job.output_dir, "eval", tag, "results.json")).read())
    assert results["scores"]["n"] == 16
    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(demo_model_dir()), job.output_dir)
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) == cmba["allocation"]["total"]
