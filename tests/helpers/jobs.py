"""The job-system tests' shared parts: `Env` (temporary jobs/ and adapters/ folders, the stand-in jobs and the
worker processes a test starts, all killed in teardown), a demo sweep spec, and small probes of a store.

    env = Env(tmp_path); env.worker("--once"); env.job("a", "--fail-at", "3")   # (the `env` fixture: tests/conftest.py)
    demo_spec(ratios="1:1:1,1:4:1", seeds=1)                                    # a SweepSpec of the demo model
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT
from tests.helpers.jobscript import job_steps
from toolkit.queue.executor import process_group_members, tagged_processes
from toolkit.queue.states import JobState
from toolkit.queue.store import JobStore, NewJob
from toolkit.study.sweep import SweepSpec


class Env:
    """Temporary jobs/ and adapters/ folders, and every process a test starts (killed in teardown)."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.jobs = tmp / "jobs"
        self.adapters = tmp / "adapters"
        self.procs: list[subprocess.Popen] = []
        self.pids: list[int] = []

    @property
    def store(self) -> JobStore:
        return JobStore(self.jobs)

    def worker(self, *args: str) -> subprocess.Popen:
        log = open(self.tmp / f"worker-{len(self.procs)}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([sys.executable, "-m", "toolkit", "worker", "--poll", "0.1", "--grace", "1",
                                 *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def job(self, name: str, *extra: str, steps: int = 10, step_time: float = 0.05, **kw) -> str:
        out = self.tmp / "out" / name
        return self.store.submit(NewJob(name=name, steps=job_steps(out, *extra, steps=steps, step_time=step_time),
                                        output_dir=str(out), **kw)).id

    def out(self, name: str) -> Path:
        return self.tmp / "out" / name

    def runs(self, name: str) -> list[dict]:
        return self.runs_at(self.out(name)) if (self.out(name) / "runs.jsonl").exists() else []

    def runs_at(self, output: str) -> list[dict]:
        return [json.loads(line) for line in (Path(output) / "runs.jsonl").read_text().splitlines()]

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for path in self.tmp.rglob("runs.jsonl"):
            for run in (json.loads(line) for line in path.read_text().splitlines()):
                self.pids.append(run["pgid"])
        for path in self.tmp.rglob("child.pid"):
            self.pids.append(int(path.read_text()))
        # what the test started with its job store in the environment (a detached worker from the app or the CLI,
        # its jobs, their children), found in /proc: also a worker not yet registered nor holding its lock file.
        # This process set the variable after it started, so its own /proc environ does not hold it.
        detached = tagged_processes("CMBA_JOBS_DIR", str(self.jobs))
        for pid in [*self.pids, *detached]:
            for member in process_group_members(pid):
                os.kill(member, signal.SIGKILL)
        for pid in detached:  # one that left its process group
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def state_of(env: Env, job_id: str) -> JobState:
    return env.store.get(job_id).state


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def demo_spec(**overrides) -> SweepSpec:
    args = {"model": "demo", "dataset": "synthetic:shapes", "ratios": "1:1:1,1:4:1,2:4:1", "seeds": 2,
            "budget_kind": "rank", "budgets": "8", "train": {"max_steps": 20, "batch_size": 4},
            "gpus_per_job": 0, **overrides}
    return SweepSpec.build(**args)


def rows_written(folder: Path) -> int:
    if not (folder / "jobs.db").exists():
        return 0
    db = sqlite3.connect(folder / "jobs.db")
    try:
        return sum(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("jobs", "sweeps"))
    finally:
        db.close()
