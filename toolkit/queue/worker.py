"""The background worker: claims queued jobs from the store and runs them through an executor.

    python -m toolkit worker                    # slots from the machine: one GPU per job, or CPU jobs
    python -m toolkit worker --slots 2 --gpus 0,1
    python -m toolkit worker --once             # run until the queue is empty, then exit
    ensure_worker()                             # from the app: start a detached worker unless one is alive

One worker per jobs folder holds `jobs_dir()/worker.lock` (flock) for its whole life, so racing callers of
`ensure_worker()` never start two; `--extra` runs another one beside it (claims stay atomic in the store).
The loop is single-threaded: reap finished steps, heartbeat (worker and jobs), act on cancel requests
(SIGTERM to the step's process group, SIGKILL after the grace period), recover jobs of lost workers
(their process gone, checked by pid + /proc start time, or their heartbeat expired: re-queued with
`--resume` in their steps until the attempt cap, else failed "worker lost"), and claim jobs for free slots.

How a run ends is toolkit.outcomes' to say (`decide`: exit code, log tail and the executor's account ->
succeeded / failed / cancelled / re-queued, and the reason); the worker records it. In short: exit 0 on
every step -> succeeded; out of memory -> failed, not retried; cancelled by the user -> cancelled; ended by
SIGTERM from elsewhere (`ExitCode.INTERRUPTED`) -> re-queued like a lost worker; any other exit -> failed. The worker
itself stopping (SIGTERM, Ctrl-C) re-queues its jobs without spending an attempt: they resume from their
last checkpoint under the next worker.

Executors are reached only through the `Executor` interface (toolkit.queue.executor): a job names its
executor, the registry (`executor_class`) gives its class. The local executor runs the jobs that hold this
machine's slots; engine executors (`engine = True`, e.g. Slurm in toolkit.queue.slurm) are created on first
need, when `Executor.problem()` says they can run here: the worker claims their jobs and submits them (the
engine queues them: they stay `queued` in the store until it starts them), `refresh` reads all their
states with one batched query per tick, and the outcome is recorded the same way. They do not die with the
worker: a stopped or lost worker leaves them to the engine, and the next worker adopts them (`attach`).

Starting a worker from the app and telling live workers from dead ones is toolkit.queue.lifecycle's part.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import signal
import socket
import sqlite3
import time
from dataclasses import dataclass

from toolkit.errors import CmbaError, InputError
from toolkit.outcomes import Reason, decide
from toolkit.queue import hooks
from toolkit.queue.executor import (
    Executor,
    LocalExecutor,
    Run,
    RunStatus,
    engine_names,
    executor_class,
    process_alive,
    process_start_time,
)
from toolkit.queue.gpus import detect_gpus, parse_gpus
from toolkit.queue.lifecycle import LEASE_S, acquire_lock, live_workers, worker_alive
from toolkit.queue.states import JobState
from toolkit.queue.store import Job, JobStore, WorkerInfo, store_busy

log = logging.getLogger("cmba.worker")
BUSY_BACKOFF_MAX_S = 30.0
"""longest wait between two tries while another process holds the store's write lock"""


@dataclass(frozen=True)
class WorkerConfig:
    """How a worker runs; `resources()` turns it into (GPU ids, slots, threads per job)."""

    slots: int | None = None
    """concurrent jobs; default: one per GPU, or on CPU cpu_count // threads_per_job"""
    gpus: str = "auto"
    threads_per_job: int | None = None
    """CPU threads per job (OMP_NUM_THREADS); default min(4, cpu_count), or cpu_count // slots"""
    poll_s: float = 1.0
    heartbeat_s: float = 2.0
    lease_s: float = LEASE_S
    recover_every_s: float = 10.0
    grace_s: float = 10.0
    """after SIGTERM, how long a job may take to checkpoint and exit before SIGKILL"""
    once: bool = False
    idle_exit_s: float = 0.0
    """exit after this long with nothing to do (0 = never)"""
    engine_jobs: int = 256
    """Slurm jobs one worker keeps submitted at once (Slurm queues them; GPUs are Slurm's to assign)"""

    def __post_init__(self):
        if self.slots is not None and (not isinstance(self.slots, int) or not 1 <= self.slots <= 256):
            raise InputError(f"slots: must be a whole number in 1..256, got {self.slots!r}")
        if self.threads_per_job is not None and (not isinstance(self.threads_per_job, int) or self.threads_per_job < 1):
            raise InputError(f"threads: must be a whole number >= 1, got {self.threads_per_job!r}")
        for name in ("poll_s", "heartbeat_s", "lease_s", "recover_every_s", "grace_s"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name.removesuffix('_s').replace('_', ' ')}: must be > 0 seconds")
        if self.heartbeat_s >= self.lease_s:
            raise InputError("heartbeat: must be shorter than the lease")
        if self.idle_exit_s < 0:
            raise InputError("idle exit: must be >= 0 seconds")
        if not isinstance(self.engine_jobs, int) or not 1 <= self.engine_jobs <= 100_000:
            raise InputError(f"slurm jobs: must be a whole number in 1..100000, got {self.engine_jobs!r}")

    def resources(self) -> tuple[list[str], int, int]:
        gpus = parse_gpus(self.gpus, detect_gpus())
        cpus = os.cpu_count() or 1
        if gpus:
            slots = self.slots or len(gpus)
            if slots > len(gpus):
                raise InputError(f"slots: {slots} jobs at one GPU each need {slots} GPUs, but {len(gpus)} are available "
                                 f"({', '.join(gpus)})")
            threads = self.threads_per_job or max(1, cpus // slots)
        elif self.slots:
            slots, threads = self.slots, self.threads_per_job or max(1, cpus // self.slots)
        else:
            threads = self.threads_per_job or min(4, cpus)
            slots = max(1, cpus // threads)
        return gpus, slots, threads


def slots_here(workers: list[dict] | None = None) -> int:
    """Jobs run at once here: the live worker's slots (`workers`: live_workers() already read), else those
    `ensure_worker` would start with (GPUs detected once per process: the 2-s jobs panel asks often)."""
    workers = live_workers() if workers is None else workers
    return workers[0]["slots"] if workers else _default_slots()


@functools.cache
def _default_slots() -> int:
    return WorkerConfig().resources()[1]


class Worker:
    """The loop; `run()` returns an exit status once stopped (signal, --once, or idle exit)."""

    def __init__(self, store: JobStore, config: WorkerConfig = WorkerConfig(), executor: Executor | None = None,
                 engines: dict[str, Executor] | None = None):
        self.store = store
        self.config = config
        self.executor = executor or LocalExecutor()
        """runs the local jobs"""
        self.engines: dict[str, Executor | None] = dict(engines or {})
        """executors of engine jobs by name ('slurm'); created on first need, None while unavailable"""
        self._engine_checked: dict[str, float] = {}
        self.gpus, self.slots, self.threads = config.resources()
        self.free_gpus = list(self.gpus)
        pid = os.getpid()
        self.info = WorkerInfo(id=f"w{secrets.token_hex(5)}", pid=pid, start_time=process_start_time(pid),
                               host=socket.gethostname(), slots=self.slots, gpus=",".join(self.gpus))
        self.runs: dict[str, Run] = {}
        self.kill_at: dict[str, float] = {}
        self.stopping = False

    # --------------------------------------------------------------------------------- the loop

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        self.store.register_worker(self.info)
        log.info("worker %s pid %d: %d slot(s), %s, %d thread(s) per job, jobs in %s", self.info.id, self.info.pid,
                 self.slots, f"GPUs {','.join(self.gpus)}" if self.gpus else "CPU", self.threads, self.store.folder)
        next_beat = next_recover = 0.0
        idle_since = time.monotonic()
        backoff = 0.0
        try:
            while not self.stopping:
                try:
                    done, next_beat, next_recover, idle_since = self._tick(next_beat, next_recover, idle_since)
                    backoff = 0.0
                except sqlite3.OperationalError as exc:
                    if not store_busy(exc):
                        raise
                    # another process holds the store's write lock: our steps keep running, we try again
                    backoff = min(BUSY_BACKOFF_MAX_S, max(0.5, 2 * backoff))
                    log.warning("worker: jobs store busy (%s); retrying in %.1f s", exc, backoff)
                    time.sleep(backoff)
                    continue
                if done:
                    break
        finally:
            self._shutdown_patiently()
        return 0

    def _shutdown_patiently(self) -> None:
        """shutdown() and leaving the workers table, retried while the store is busy (jobs must not be lost)."""
        for attempt in range(60):
            try:
                self.shutdown()
                self.store.remove_worker(self.info.id)
                return
            except sqlite3.OperationalError as exc:
                if not store_busy(exc) or attempt == 59:
                    raise
                time.sleep(min(BUSY_BACKOFF_MAX_S, 0.5 * 2 ** attempt))

    def _tick(self, next_beat: float, next_recover: float, idle_since: float) -> tuple[bool, float, float, float]:
        """One pass of the loop; returns (stop now, next heartbeat, next recovery, idle since)."""
        now = time.monotonic()
        self._reap()
        if now >= next_beat:
            self._heartbeat()
            next_beat = now + self.config.heartbeat_s
        if now >= next_recover:
            self.recover()
            next_recover = now + self.config.recover_every_s
        self._cancels()
        claimed = self._fill()
        if self.runs or claimed:
            idle_since = now
        elif self.config.once:
            return True, next_beat, next_recover, idle_since
        elif self.config.idle_exit_s and now - idle_since >= self.config.idle_exit_s:
            self.store.remove_worker(self.info.id)
            if not self._fill():  # a job queued while we were deciding to go: stay
                return True, next_beat, next_recover, idle_since
            self.store.register_worker(self.info)
            idle_since = now
        time.sleep(self.config.poll_s if self.runs or not claimed else 0)
        return False, next_beat, next_recover, idle_since

    def _stop(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        log.info("worker: %s received, stopping", signal.Signals(signum).name)
        self.stopping = True

    def _env(self, job, gpu_ids: list[str]) -> dict[str, str]:
        threads = str(self.threads)
        return {"CUDA_VISIBLE_DEVICES": ",".join(gpu_ids), "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
                "OPENBLAS_NUM_THREADS": threads, "CMBA_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false",
                "CMBA_JOB_ID": job.id, "CMBA_JOB_ATTEMPT": str(job.attempts)}

    def _executor(self, job) -> Executor:
        return self.executor if job.executor == self.executor.name else self.engines[job.executor]

    def engine(self, name: str) -> Executor | None:
        """The executor of engine `name`, or None when this machine cannot reach that engine (checked again
        after a minute: a worker does not claim jobs it cannot submit)."""
        if self.engines.get(name) is None and time.monotonic() - self._engine_checked.get(name, -1e9) > 60:
            self._engine_checked[name] = time.monotonic()
            cls = executor_class(name)
            problem = cls.problem()
            if problem:
                log.info("%s jobs are not claimed: %s", name, problem)
            self.engines[name] = None if problem else cls()
        return self.engines.get(name)

    def _local_runs(self) -> int:
        return sum(1 for r in self.runs.values() if not self._executor(r.job).engine)

    def _fill(self) -> int:
        claimed = 0
        while self._local_runs() < self.slots and not self.stopping:
            job = self.store.claim(self.info, max_gpus=len(self.free_gpus))
            if job is None:
                break
            claimed += 1
            gpu_ids, self.free_gpus = self.free_gpus[:job.gpus], self.free_gpus[job.gpus:]
            try:
                run = self.executor.launch(job, env=self._env(job, gpu_ids))
            except OSError as exc:
                self.free_gpus += gpu_ids
                self.store.finish(job.id, job.token, JobState.FAILED, reason=Reason.LAUNCH_FAILED,
                                  message=f"{type(exc).__name__}: {exc}")
                log.error("job %s: launch failed: %s", job.id, exc)
                continue
            run.handle["gpu_ids"] = gpu_ids
            self.runs[job.id] = run
            self.store.set_process(job.id, job.token, pid=run.pid, pid_start=run.pid_start,
                                   step_index=run.step_index, gpu_ids=",".join(gpu_ids))
            log.info("job %s (%s) attempt %d: started pid %s%s", job.id, job.name, job.attempts, run.pid,
                     f" on GPU {','.join(gpu_ids)}" if gpu_ids else "")
        return claimed + sum(self._fill_engine(name) for name in engine_names())

    def _fill_engine(self, name: str) -> int:
        """Claim and submit engine jobs while fewer than `engine_jobs` are out; the engine queues them."""
        claimed = 0
        while not self.stopping and len(self.runs) - self._local_runs() < self.config.engine_jobs:
            if not self.store.has_unclaimed(name) or (executor := self.engine(name)) is None:
                break
            job = self.store.claim(self.info, max_gpus=1 << 30, executor=name)
            if job is None:
                break
            claimed += 1
            env = {"TOKENIZERS_PARALLELISM": "false", "CMBA_JOB_ID": job.id, "CMBA_JOB_ATTEMPT": str(job.attempts)}
            try:
                run = executor.launch(job, env=env)
            except (OSError, CmbaError) as exc:
                self.store.finish(job.id, job.token, JobState.FAILED, reason=Reason.LAUNCH_FAILED,
                                  message=str(exc) if isinstance(exc, CmbaError) else f"{type(exc).__name__}: {exc}")
                log.error("job %s: %s submission failed: %s", job.id, name, exc)
                continue
            run.handle["queued"] = True
            self.runs[job.id] = run
            self.store.set_process(job.id, job.token, pid=None, pid_start=None, step_index=run.step_index,
                                   engine_id=run.handle["engine_id"])
            log.info("job %s (%s) attempt %d: submitted to %s as job %s", job.id, job.name, job.attempts, name,
                     run.handle["engine_id"])
        return claimed

    def _reap(self) -> None:
        by_executor: dict[int, list[Run]] = {}
        for run in self.runs.values():
            by_executor.setdefault(id(self._executor(run.job)), []).append(run)
        for runs in by_executor.values():  # one status query per engine and tick, not one per job
            self._executor(runs[0].job).refresh(runs)
        for job_id, run in list(self.runs.items()):
            status = self._executor(run.job).poll(run)
            if status.step_changed or (status.gpu_ids and status.gpu_ids != run.handle.get("gpus_seen")):
                run.handle["gpus_seen"] = status.gpu_ids
                self.store.set_process(job_id, run.job.token, pid=run.pid, pid_start=run.pid_start,
                                       step_index=run.step_index, gpu_ids=status.gpu_ids)
            if not status.done and status.queued != run.handle.get("queued", False):
                run.handle["queued"] = status.queued
                self.store.set_engine_state(job_id, run.job.token, JobState.QUEUED if status.queued else JobState.RUNNING,
                                            reason=status.reason if status.queued else None)
                log.info("job %s: %s%s", job_id, "back in the engine's queue" if status.queued else "started",
                         f" ({status.reason})" if status.queued and status.reason else "")
            if status.done:
                self._record(run, status)  # first: if the store is busy, the run is polled (and recorded) again
                del self.runs[job_id]
                self.kill_at.pop(job_id, None)
                self.free_gpus += run.handle.get("gpu_ids", [])

    def _step_tail(self, run: Run, n: int = 30) -> list[str]:
        """The step's own last log lines (after the worker's header for this attempt)."""
        tail = self._executor(run.job).tail(run.job, n)
        for i in range(len(tail) - 1, -1, -1):
            if tail[i].startswith("[cmba-worker "):
                return tail[i + 1:]
        return tail

    def _record(self, run: Run, status: RunStatus) -> None:
        job = run.job
        if run.handle.get("lost"):
            log.warning("job %s: re-assigned while we ran it; its result is not ours to record", job.id)
            return
        outcome = decide(status.returncode, self._step_tail(run), shutdown=bool(run.handle.get("shutdown")),
                         cancelling=run.cancelling, engine_reason=status.reason, engine_resume=status.resume,
                         engine_cancelled=status.cancelled)
        if outcome.requeue:
            state = self.store.requeue(job.id, job.token, reason=outcome.reason, message=outcome.message,
                                       count_attempt=outcome.count_attempt)
        else:
            state = outcome.state
            self.store.finish(job.id, job.token, state, reason=outcome.reason, message=outcome.message,
                              exit_code=outcome.exit_code)
        log.info("job %s: %s%s", job.id, state.value if state else "no longer ours",
                 f" ({outcome.reason})" if outcome.reason else "")
        if state is not None and state.finished and hooks.hook_of(job):
            self._follow_up(self.store.get(job.id))

    def _follow_up(self, job: Job) -> None:
        """Call the follow-up hook the job names (toolkit.queue.hooks) and mark it done. A hook that fails (a
        damaged evaluation, a module that no longer imports) is logged, never stops the worker, and is called
        again by the next recovery pass."""
        try:
            hooks.call(job, self.store)
        except (CmbaError, OSError, KeyError, ValueError, TypeError) as exc:
            log.error("job %s: follow-up %s failed: %s", job.id, hooks.hook_of(job), exc)
            return
        self.store.mark_followed_up(job.id)

    def _heartbeat(self) -> None:
        lost = self.store.heartbeat(self.info, {i: r.job.token for i, r in self.runs.items()})
        for job_id in lost:
            run = self.runs[job_id]
            executor = self._executor(run.job)
            if executor.engine:  # another worker adopted it (or it ended): the engine job is theirs now
                log.warning("job %s: our claim expired (another worker holds it now): forgetting it", job_id)
                del self.runs[job_id]
                self.kill_at.pop(job_id, None)
                continue
            log.warning("job %s: our claim expired (another worker re-queued it): stopping our copy", job_id)
            run.handle["lost"] = True
            executor.cancel(run, force=True)

    def _cancels(self) -> None:
        now = time.monotonic()
        for job_id in self.store.cancel_requested({i: r.job.token for i, r in self.runs.items()}):
            run = self.runs[job_id]
            if not run.cancelling:
                log.info("job %s: cancel requested: SIGTERM", job_id)
                self._executor(run.job).cancel(run)
                self.kill_at[job_id] = now + self.config.grace_s
        for job_id, deadline in list(self.kill_at.items()):
            if now >= deadline and job_id in self.runs:
                log.info("job %s: still running %.0f s after SIGTERM: SIGKILL", job_id, self.config.grace_s)
                self._executor(self.runs[job_id].job).cancel(self.runs[job_id], force=True)
                del self.kill_at[job_id]

    def recover(self) -> list[tuple[str, str]]:
        """Re-queue (or fail at the cap) claimed jobs whose worker is gone, or adopt them when an engine still
        runs them; returns [(job id, new state or 'adopted')]."""
        done = []
        now = time.time()
        for job in self.store.claimed():
            if job.worker_id == self.info.id and job.id in self.runs:
                continue
            same_host = job.worker_host == self.info.host
            gone = same_host and not process_alive(job.worker_pid, job.worker_start)
            expired = job.heartbeat is None or now - job.heartbeat > self.config.lease_s
            if not (gone or expired or job.worker_id == self.info.id):
                continue
            if job.executor != self.executor.name:
                if (executor := self.engine(job.executor)) is None:
                    continue  # cannot reach that engine from here: leave the job to a worker that can
                if job.engine_id:
                    adopted = self.store.adopt(job.id, job.token, self.info)
                    if adopted is not None:
                        run = executor.attach(adopted)
                        run.handle["queued"] = adopted.state is JobState.QUEUED
                        self.runs[job.id] = run
                        log.warning("job %s: its worker (pid %s) is gone: adopted %s job %s", job.id,
                                    job.worker_pid, job.executor, job.engine_id)
                        done.append((job.id, "adopted"))
                    continue
            elif same_host:
                self.executor.cleanup_lost(job, grace_s=self.config.grace_s)
            state = self.store.requeue(job.id, job.token, reason=Reason.WORKER_LOST,
                                       message=f"worker pid {job.worker_pid} on {job.worker_host} stopped")
            if state is not None:
                log.warning("job %s: its worker (pid %s) is gone: %s", job.id, job.worker_pid, state.value)
                done.append((job.id, state.value))
        for w in self.store.workers():
            if w["id"] != self.info.id and not worker_alive(w, lease_s=self.config.lease_s, host=self.info.host):
                self.store.remove_worker(w["id"])
        if self.store.fail_unrunnable(total_gpus=len(self.gpus)):
            log.warning("queued job(s) need more GPUs than this machine has: failed")
        for job in self.store.pending_follow_ups():  # jobs that ended while no worker was there to follow them up
            self._follow_up(job)
        return done

    def shutdown(self) -> None:
        """Stop our local jobs (SIGTERM, then SIGKILL after the grace period) and put them back in the queue;
        engine jobs keep running in their engine, for the next worker to adopt."""
        engine_runs = [i for i, r in self.runs.items() if self._executor(r.job).engine]
        if engine_runs:
            log.info("worker: %d engine job(s) keep running; the next worker adopts them", len(engine_runs))
            for job_id in engine_runs:
                del self.runs[job_id]
        if not self.runs:
            return
        log.info("worker: stopping %d job(s); they are re-queued and resume from their checkpoints", len(self.runs))
        for run in self.runs.values():
            run.handle["shutdown"] = True
            self.executor.cancel(run)
        deadline = time.monotonic() + self.config.grace_s
        while self.runs and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        for run in self.runs.values():
            self.executor.cancel(run, force=True)
        while self.runs:
            self._reap()
            time.sleep(0.02)


def run_worker(config: WorkerConfig, *, lock_fd: int | None = None, exclusive: bool = True,
               store: JobStore | None = None) -> int:
    """What `python -m toolkit worker` does: take the lock (unless --extra), then loop."""
    store = store or JobStore()
    worker = Worker(store, config)  # resources are checked before the lock is taken
    fd = acquire_lock(store.folder / "worker.lock", lock_fd) if exclusive else None
    try:
        return worker.run()
    finally:
        if fd is not None:
            os.close(fd)
