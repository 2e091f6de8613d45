"""Several GPUs in one job, tested on CPU: torchrun with the gloo backend and 2 processes.

The launcher and the rank-side helpers (toolkit/distributed.py), then real DDP training of the demo model:
the same numbers as one process (the global batch is kept), only rank 0 writes, and a 2-"GPU" sweep job run
by the worker (CUDA_VISIBLE_DEVICES=0,1 on a CPU-only torch) stops on SIGTERM with a checkpoint and resumes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import ROOT
from tests.helpers.jobscript import PATIENCE, wait_for
from toolkit.cli import make_parser
from toolkit.cli.train import settings_from_args
from toolkit.errors import InputError
from toolkit.queue.states import JobState
from toolkit.study.sweep import SweepSpec, plan_sweep, submit_sweep
from toolkit.training.distributed import (
    DistContext,
    Launch,
    SingleProcess,
    context,
    is_launch,
    plan_launch,
    python_argv,
    split_batch,
)
from toolkit.training.engine import train

DATA = "synthetic:shapes?n=48&seed=1"
ARGS = ["--model", "demo", "--dataset", DATA, "--ratio", "1:4:1", "--budget-rank", "4", "--max-steps", "4",
        "--batch-size", "2", "--grad-accum", "2", "--lr", "2e-3", "--lora-dropout", "0", "--checkpoint-every", "2",
        "--no-progress"]


@pytest.mark.parametrize("batch,accum,world,expected", [
    (4, 2, 2, (4, 1)),   # accumulation divided: the same micro-batches as one process
    (8, 4, 2, (8, 2)),
    (4, 1, 2, (2, 1)),   # else the batch
    (6, 3, 3, (6, 1)),
    (8, 1, 4, (2, 1)),
])
def test_split_batch_keeps_the_global_batch(batch, accum, world, expected):
    b, a = split_batch(batch, accum, world)
    assert (b, a) == expected and b * a * world == batch * accum


def test_uneven_global_batch_is_refused():
    with pytest.raises(InputError, match=r"batch-size: the global batch 3 x 1 .* cannot be split evenly over 2 "
                                         r"processes; make --batch-size or --grad-accum a multiple of 2"):
        split_batch(3, 1, 2)


@pytest.mark.parametrize("batch,accum,world", [(4, 2, 2), (4, 1, 2), (6, 2, 3), (2, 4, 4)])
def test_ranks_together_see_exactly_the_samples_of_one_process(batch, accum, world):
    for step in range(3):
        seen = []
        for rank in range(world):
            ctx = DistContext(rank=rank, world=world, local_rank=rank, backend="gloo", device="cpu")
            ctx.plan_batches(batch, accum)
            for micro in range(ctx.accum):
                first, size = ctx.micro_batch(step, micro, batch, accum)
                seen += range(first, first + size)
        assert sorted(seen) == list(range(step * batch * accum, (step + 1) * batch * accum))  # no overlap, no gap


@pytest.mark.parametrize("batch,accum", [(4, 2), (3, 1), (1, 5)])
def test_single_process_context_is_the_plain_loop(batch, accum, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = context()
    assert isinstance(ctx, SingleProcess) and ctx.main and ctx.world == 1 and ctx.rank == 0
    assert ctx.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    ctx.plan_batches(batch, accum)
    assert (ctx.batch, ctx.accum) == (batch, accum)
    for step in range(3):  # the micro-batches of one process: consecutive, no overlap, no gap
        seen = []
        for micro in range(ctx.accum):
            first, size = ctx.micro_batch(step, micro, batch, accum)
            assert (first, size) == ((step * accum + micro) * batch, batch)
            seen += range(first, first + size)
        assert seen == list(range(step * batch * accum, (step + 1) * batch * accum))
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    ctx.reduce_grads([p])
    ctx.broadcast_params([p])
    ctx.barrier()
    assert torch.equal(p.grad, torch.full((3,), 2.0)) and torch.equal(p.data, torch.ones(3))
    assert ctx.mean(1.5) == 1.5 and ctx.any(True) and not ctx.any(False) and ctx.broadcast_text("x") == "x"
    assert ctx.describe() is None
    calls = []
    ctx.run_on_main(lambda: calls.append(1))
    assert calls == [1]
    with pytest.raises(InputError, match="output: refused"):
        ctx.run_on_main(lambda: (_ for _ in ()).throw(InputError("output: refused")))


def test_rank_context_describes_its_split():
    ctx = DistContext(rank=1, world=2, local_rank=1, backend="gloo", device="cpu")
    ctx.plan_batches(4, 2)
    assert not ctx.main and ctx.describe() == {"world_size": 2, "backend": "gloo", "per_device_batch_size": 4,
                                               "per_device_grad_accum": 1}


def test_a_step_is_a_launch_by_its_module_not_by_mentioning_it():
    assert is_launch(["{python}", "-m", "toolkit.training.distributed", "--", "-m", "toolkit", "train"])
    assert is_launch(["{python}", "-m", "toolkit.distributed", "--", "-m", "toolkit", "train"])  # queued before
    assert not is_launch(["{python}", "-m", "toolkit", "train", "--name", "toolkit.training.distributed"])
    assert not is_launch(["{python}"])


def test_launch_plan_takes_the_rendezvous_from_slurm():
    slurm_env = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NUM_NODES": "2", "SLURM_NODEID": "1", "SLURM_STEP_NODELIST": "gpu[07-08]",
           "CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    plan = plan_launch(env=slurm_env)
    assert plan == Launch(nproc_per_node=4, nnodes=2, node_rank=1, master_addr="gpu07", master_port=20000 + 4242)
    assert plan.world_size == 8
    args = plan.torchrun_args()
    assert args[args.index("--node-rank") + 1] == "1" and args[args.index("--master-addr") + 1] == "gpu07"
    assert "SIGUSR2" in args[args.index("--signals-to-handle") + 1] and "--standalone" not in args
    one = plan_launch(env={"CUDA_VISIBLE_DEVICES": "0,1"})
    assert one == Launch(nproc_per_node=2) and "--standalone" in one.torchrun_args()
    assert plan_launch(3, env={"SLURM_JOB_ID": "7", "SLURM_NNODES": "1"}) == Launch(nproc_per_node=3)
    assert python_argv(["-m", "toolkit", "train", "--x"])[0] == ["--module", "toolkit", "train", "--x"]


def _adapter(folder: Path) -> dict:
    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.training
@pytest.mark.slow
def test_ddp_on_cpu_trains_what_one_process_trains_and_only_rank_0_writes(tmp_path):
    one = tmp_path / "one"
    train(settings_from_args(make_parser().parse_args(["train", *ARGS, "--output", str(one)])), log=lambda m: None)
    two = tmp_path / "two"
    r = subprocess.run([sys.executable, "-m", "toolkit.training.distributed", "--nproc-per-node", "2", "--", "-m", "toolkit",
                        "train", *ARGS, "--output", str(two)], cwd=ROOT, capture_output=True, text=True, timeout=PATIENCE,
                       env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 processes (1 node(s) x 2)" in r.stderr
    assert r.stderr.count("adapter written to") == 1  # rank 1 keeps quiet
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    lines = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4]  # written once, by rank 0
    reference = [json.loads(x)["loss"] for x in (one / "metrics.jsonl").read_text().splitlines()]
    assert [x["loss"] for x in lines] == pytest.approx(reference, rel=1e-5)
    a, b = _adapter(one), _adapter(two)
    # Same batches, same loss curve; the weights agree to float noise only: two ranks' gradients are summed by
    # all-reduce instead of by accumulation, and Adam's m/sqrt(v) magnifies that noise on LoRA weights whose
    # gradients are near zero (measured: 0.0 in one data order, 3e-5 in another, against steps of lr = 2e-3)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    cmba = json.loads((two / "cmba.json").read_text())
    assert cmba["training"]["batch_size"] == 2 and cmba["training"]["grad_accum"] == 2  # what the user asked
    assert cmba["result"]["distributed"] == {"world_size": 2, "backend": "gloo", "per_device_batch_size": 2,
                                             "per_device_grad_accum": 1}


@pytest.mark.training
@pytest.mark.slow
def test_two_gpu_sweep_job_stops_on_sigterm_and_resumes_under_ddp(env, monkeypatch):  # noqa: F811
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # two "GPUs" for the worker; torch here is CPU-only: gloo
    steps = 30
    spec = SweepSpec.build(model="demo", dataset=DATA, ratios="1:4:1", budget_kind="rank", budgets="4",
                           train={"max_steps": steps, "batch_size": 2, "grad_accum": 2, "lr": 2e-3, "checkpoint_every": 50},
                           evaluate=False, gpus_per_job=2)
    plan = plan_sweep(spec)
    [job] = submit_sweep(plan).jobs
    assert job.gpus == 2 and list(job.steps[0][:6]) == ["{python}", "-m", "toolkit.training.distributed", "--nproc-per-node",
                                                          "2", "--"]
    metrics = Path(job.output_dir) / "metrics.jsonl"
    worker = env.worker("--threads", "2")
    wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 4, what="4 steps")
    worker.send_signal(signal.SIGTERM)  # the worker stops: SIGTERM to the job, which checkpoints on every rank
    assert worker.wait(PATIENCE) == 0
    stopped = env.store.get(job.id)
    assert stopped.state is JobState.QUEUED and stopped.reason == "worker stopped" and stopped.attempts == 0
    assert list((Path(job.output_dir) / "checkpoints").iterdir())
    assert env.worker("--threads", "2", "--once").wait(PATIENCE) == 0
    done = env.store.get(job.id)
    assert done.state is JobState.SUCCEEDED, done.message
    log = Path(done.log_path).read_text()
    assert "2 processes (1 node(s) x 2)" in log and "resuming" in log and "interrupted by SIGTERM" in log
    assert [json.loads(x)["step"] for x in metrics.read_text().splitlines()] == list(range(1, steps + 1))
    cmba = json.loads((Path(job.output_dir) / "cmba.json").read_text())
    assert cmba["result"]["steps"] == steps and cmba["result"]["distributed"]["world_size"] == 2
