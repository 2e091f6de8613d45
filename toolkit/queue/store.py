"""The SQLite job store: the single source of truth of the background job system.

    store = JobStore()                                   # jobs_dir()/jobs.db, created on first use
    job = store.submit(name="demo-r1-4-1-b8-s0", steps=[[PYTHON, "-m", "toolkit", "train", ...]])
    mine = store.claim(worker, max_gpus=0)               # atomic: one UPDATE ... RETURNING in BEGIN IMMEDIATE
    store.finish(mine.id, mine.token, JobState.SUCCEEDED)

Every write is one short `BEGIN IMMEDIATE` transaction on a fresh connection (WAL journal), so the app's
threads, the CLI and several workers can share the file. A claim stamps the job with a new random token;
every later write by a worker names that token, so a worker wrongly declared dead (and whose job was
re-queued and claimed again) can no longer change the job. Times are Unix seconds.

Executors: each job names the executor that runs it (`local`, the default, or `slurm`) and its resources
(the Slurm request). A local job is `running` from its claim on; an engine job (Slurm) is claimed by the worker
that submits it, and stays `queued` (with a token: it is waiting in the engine's queue, `engine_id` is its
engine job id) until the engine starts it. Only unclaimed jobs (`queued` without a token) can be claimed.

Attempts: `attempts` counts the runs a job has started; the claim increments it. When a worker is lost the
job is re-queued while `attempts < max_attempts`, else it fails with reason "worker lost". A user's `retry`
starts a fresh count (attempts = 0, `retries` + 1) and keeps `step_index`, so a job that failed in its
evaluate step re-runs only that step, and training steps resume from their last checkpoint (`--resume`).

Why one module of this size: it is the one owner of one file format, jobs.db. The schema, its migrations,
the records built from its rows (`Job.from_row`) and every statement that reads or writes them change
together, and the claim-token discipline is the same in every method; split, they would drift. The worker's
process and heartbeat handling lives elsewhere (toolkit.queue.worker, toolkit.queue.lifecycle), and the
reasons it records come from toolkit.outcomes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from toolkit.errors import InputError
from toolkit.outcomes import Reason
from toolkit.paths import jobs_dir
from toolkit.queue.hooks import LEGACY_HOOKS, ON_FINISH, with_legacy_hook
from toolkit.queue.states import JobState

SCHEMA_VERSION = 4
DEFAULT_MAX_ATTEMPTS = 3
BUSY_TIMEOUT_S = float(os.environ.get("CMBA_STORE_BUSY_S") or 30.0)
"""how long one statement waits for another process's write lock before `database is locked`"""


def store_busy(exc: BaseException) -> bool:
    """A SQLite error that only says another process holds the lock (worth retrying, not a bug)."""
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sweeps (
    id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    sweep_id TEXT REFERENCES sweeps(id),
    name TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    steps TEXT NOT NULL,
    step_index INTEGER NOT NULL DEFAULT 0,
    output_dir TEXT,
    log_path TEXT NOT NULL,
    gpus INTEGER NOT NULL DEFAULT 0,
    meta TEXT NOT NULL DEFAULT '{}',
    settings TEXT NOT NULL DEFAULT '{}',
    executor TEXT NOT NULL DEFAULT 'local',
    resources TEXT NOT NULL DEFAULT '{}',
    engine_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 3,
    retries INTEGER NOT NULL DEFAULT 0,
    token TEXT,
    worker_id TEXT,
    worker_pid INTEGER,
    worker_start INTEGER,
    worker_host TEXT,
    pid INTEGER,
    pid_start INTEGER,
    gpu_ids TEXT,
    heartbeat REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    followed_up INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    message TEXT,
    exit_code INTEGER,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    updated REAL NOT NULL,
    UNIQUE (sweep_id, name)
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_by_executor ON jobs (executor, state, seq);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    start_time INTEGER,
    host TEXT NOT NULL,
    slots INTEGER NOT NULL,
    gpus TEXT NOT NULL DEFAULT '',
    heartbeat REAL NOT NULL,
    started REAL NOT NULL
);
"""

_MIGRATIONS = {  # from version -> statements that bring a store of that version to the next
    1: ["ALTER TABLE jobs ADD COLUMN executor TEXT NOT NULL DEFAULT 'local'",
        "ALTER TABLE jobs ADD COLUMN resources TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE jobs ADD COLUMN engine_id TEXT",
        "CREATE INDEX IF NOT EXISTS jobs_by_executor ON jobs (executor, state, seq)"],
    2: ["ALTER TABLE jobs ADD COLUMN settings TEXT NOT NULL DEFAULT '{}'"],  # older jobs: argv steps, no settings
    3: ["ALTER TABLE jobs ADD COLUMN followed_up INTEGER NOT NULL DEFAULT 0"],  # older jobs: hooks run once more
}
EXECUTORS = ("local", "slurm")


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Job:
    """One row of the `jobs` table (a snapshot: read it again for fresh state)."""

    id: str
    name: str
    state: JobState
    steps: tuple[tuple[str, ...], ...]
    """argv lists run in order; `PYTHON` as an element stands for the worker's interpreter"""
    step_index: int
    """the step running now, or the first one not yet completed"""
    log_path: str
    output_dir: str | None = None
    sweep_id: str | None = None
    gpus: int = 0
    """GPUs the job needs (0 = CPU)"""
    meta: dict = field(default_factory=dict)
    """what the submitter wants shown (ratio, seed, budget, ranks, params), and `on_finish`: the follow-up hook
    the worker calls once the job has ended (toolkit.queue.hooks)"""
    settings: dict = field(default_factory=dict)
    """what its steps run, as data: {"train": TrainSettings fields, "evaluate": EvalSettings fields} for sweep
    jobs ({} for jobs queued before schema 3, whose steps carry flags)"""
    executor: str = "local"
    """what runs it: 'local' (a worker's subprocess) or 'slurm'"""
    resources: dict = field(default_factory=dict)
    """the executor's resource request (Slurm: SlurmResources.to_dict())"""
    engine_id: str | None = None
    """the engine's job id (Slurm job id) of the current attempt"""
    attempts: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retries: int = 0
    token: str | None = None
    worker_id: str | None = None
    worker_pid: int | None = None
    worker_start: int | None = None
    worker_host: str | None = None
    pid: int | None = None
    """the running step's process id (= its process group id: each step starts a new session)"""
    pid_start: int | None = None
    gpu_ids: str | None = None
    heartbeat: float | None = None
    cancel_requested: bool = False
    followed_up: bool = False
    """its follow-up hook (toolkit.queue.hooks) has run for its current final state"""
    reason: str | None = None
    """why it failed or was cancelled: 'out_of_memory', 'exit code 1', 'worker lost', ..."""
    message: str | None = None
    """the last 'error: ...' line of the log, when there is one"""
    exit_code: int | None = None
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    updated: float = 0.0

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        d = dict(row)
        d.pop("seq", None)
        d["state"] = JobState(d["state"])
        d["steps"] = tuple(tuple(s) for s in json.loads(d["steps"]))
        d["meta"] = with_legacy_hook(json.loads(d["meta"] or "{}"), sweep_id=d.get("sweep_id"))
        d["settings"] = json.loads(d.get("settings") or "{}")
        d["resources"] = json.loads(d.get("resources") or "{}")
        d["cancel_requested"] = bool(d["cancel_requested"])
        d["followed_up"] = bool(d.get("followed_up"))
        return cls(**d)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "token"}
        d["state"] = self.state.value
        d["steps"] = [list(s) for s in self.steps]
        for k in ("created", "started", "finished", "updated", "heartbeat"):
            d[k] = _iso(d[k])
        return d


@dataclass(frozen=True)
class NewJob:
    """What a submitter gives for one job."""

    name: str
    steps: Sequence[Sequence[str]]
    output_dir: str | None = None
    gpus: int = 0
    meta: dict = field(default_factory=dict)
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    id: str | None = None
    """fixed id (sweeps derive it from the sweep id); random when None"""
    executor: str = "local"
    resources: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    """the settings its steps run, as JSON-able data (Job.settings)"""

    def __post_init__(self):
        if not self.name or not str(self.name).strip():
            raise InputError("job name: must not be empty")
        if not self.steps or not all(self.steps) or not all(isinstance(a, str) for s in self.steps for a in s):
            raise InputError("steps: give at least one non-empty argv list of strings")
        if not isinstance(self.settings, dict):
            raise InputError(f"settings: must be a JSON object (dict), got {type(self.settings).__name__}")
        if not isinstance(self.gpus, int) or self.gpus < 0:
            raise InputError(f"gpus: must be a whole number >= 0, got {self.gpus!r}")
        if not isinstance(self.max_attempts, int) or not 1 <= self.max_attempts <= 100:
            raise InputError(f"max attempts: must be a whole number in 1..100, got {self.max_attempts!r}")
        if self.executor not in EXECUTORS:
            raise InputError(f"executor: must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")


@dataclass(frozen=True)
class WorkerInfo:
    """Who claims: a worker process (pid + /proc start time identify it across pid reuse)."""

    id: str
    pid: int
    start_time: int | None
    host: str
    slots: int = 1
    gpus: str = ""


class JobStore:
    """The job database in `folder` (default `jobs_dir()`); raises InputError when it cannot be written."""

    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder) if folder is not None else jobs_dir()
        self.path = self.folder / "jobs.db"
        check_writable(self.folder)
        with self._connect() as db:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                with self._write(db):
                    version = db.execute("PRAGMA user_version").fetchone()[0]  # again, under the write lock
                    if version == 0:
                        # executescript() would commit on its own: run the statements one by one instead
                        for statement in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                            db.execute(statement)
                    else:
                        while version in _MIGRATIONS:
                            columns = {r[1] for r in db.execute("PRAGMA table_info(jobs)")}
                            for statement in _MIGRATIONS[version]:
                                added = re.match(r"ALTER TABLE jobs ADD COLUMN (\w+)", statement)
                                if not (added and added.group(1) in columns):  # a column a newer schema has
                                    db.execute(statement)
                            version += 1
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # ------------------------------------------------------------------------------------- plumbing

    @contextmanager
    def _connect(self):
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            db.execute("PRAGMA foreign_keys = ON")
            yield db
        finally:
            db.close()

    @contextmanager
    def _write(self, db: sqlite3.Connection):
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextmanager
    def transaction(self):
        """A connection inside one BEGIN IMMEDIATE transaction (committed on exit, rolled back on error)."""
        with self._connect() as db, self._write(db):
            yield db

    def _update(self, sql: str, params: dict) -> int:
        with self.transaction() as db:
            return db.execute(sql, {"now": time.time(), **params}).rowcount

    # ---------------------------------------------------------------------------------- submitting

    @staticmethod
    def _insert(db: sqlite3.Connection, job: NewJob, job_id: str, sweep_id: str | None, folder: Path,
                now: float) -> None:
        db.execute(
            "INSERT INTO jobs (id, sweep_id, name, state, steps, output_dir, log_path, gpus, meta, settings,"
            " max_attempts, executor, resources, created, updated)"
            " VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job_id, sweep_id, job.name, json.dumps([list(s) for s in job.steps]), job.output_dir,
             str(folder / job_id / "log.txt"), job.gpus, json.dumps(job.meta), json.dumps(job.settings, sort_keys=True),
             job.max_attempts, job.executor, json.dumps(job.resources, sort_keys=True), now, now),
        )

    def submit(self, job: NewJob) -> Job:
        """Queue one job outside any sweep; a fixed `job.id` makes the submission idempotent."""
        job_id = job.id or f"j{secrets.token_hex(5)}"
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
                self._insert(db, job, job_id, None, self.folder, time.time())
        return self.get(job_id)

    def submit_sweep(self, sweep_id: str, spec: dict, jobs: Sequence[NewJob]) -> tuple[bool, list[Job]]:
        """Queue a sweep's jobs in one transaction, once: (created, jobs); created is False if it existed."""
        now = time.time()
        with self.transaction() as db:
            created = db.execute("INSERT INTO sweeps (id, spec, created) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
                                 (sweep_id, json.dumps(spec, sort_keys=True), now)).rowcount == 1
            if created:
                for job in jobs:
                    self._insert(db, job, job.id or f"j{secrets.token_hex(5)}", sweep_id, self.folder, now)
        return created, self.list(sweep=sweep_id)

    def add_to_sweep(self, sweep_id: str, jobs: Sequence[NewJob]) -> list[Job]:
        """Queue more jobs into an existing sweep (a search's next rung) in one transaction; jobs whose fixed
        id is already there are left as they are, so adding the same jobs twice adds them once."""
        now = time.time()
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM sweeps WHERE id = ?", (sweep_id,)).fetchone() is None:
                raise InputError(f"sweep: no sweep '{sweep_id}'")
            for job in jobs:
                if job.id is None or db.execute("SELECT 1 FROM jobs WHERE id = ?", (job.id,)).fetchone() is None:
                    self._insert(db, job, job.id or f"j{secrets.token_hex(5)}", sweep_id, self.folder, now)
        return self.list(sweep=sweep_id)

    # ------------------------------------------------------------------------------------- reading

    def get(self, job_id: str) -> Job:
        """The job with this id (or a unique id prefix, or a unique job name); unknown -> InputError."""
        text = str(job_id).strip()
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (text,)).fetchone()
            if row is None and text:
                rows = db.execute("SELECT * FROM jobs WHERE id LIKE ? ESCAPE '\\' OR name = ? ORDER BY seq LIMIT 3",
                                  (text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%", text)).fetchall()
                if len(rows) > 1:
                    raise InputError(f"job: '{text}' matches several jobs ({', '.join(r['id'] for r in rows)}, ...); give more of the id")
                row = rows[0] if rows else None
        if row is None:
            raise InputError(f"job: no job '{text}' (see `python -m toolkit jobs list`)")
        return Job.from_row(row)

    def list(self, *, sweep: str | None = None, states: Iterable[JobState | str] | None = None) -> list[Job]:
        sql, params = "SELECT * FROM jobs WHERE 1", []
        if sweep is not None:
            sql += " AND (sweep_id = ? OR sweep_id LIKE ?)"
            params += [sweep, f"{sweep}%"]
        if states is not None:
            wanted = [JobState(s).value for s in states]
            sql += f" AND state IN ({', '.join('?' * len(wanted))})"
            params += wanted
        with self._connect() as db:
            return [Job.from_row(r) for r in db.execute(sql + " ORDER BY seq", params)]

    def sweeps(self) -> list[dict]:
        """Every sweep, newest first: {id, created, spec, counts {state: n}}."""
        with self._connect() as db:
            out = []
            for row in db.execute("SELECT * FROM sweeps ORDER BY created DESC"):
                counts = dict(db.execute("SELECT state, COUNT(*) FROM jobs WHERE sweep_id = ? GROUP BY state",
                                         (row["id"],)).fetchall())
                out.append({"id": row["id"], "created": row["created"], "spec": json.loads(row["spec"]),
                            "counts": counts})
        return out

    def sweep_spec(self, sweep_id: str) -> dict | None:
        """The stored spec of one sweep (one row, no job counts), or None."""
        with self._connect() as db:
            row = db.execute("SELECT spec FROM sweeps WHERE id = ?", (sweep_id,)).fetchone()
        return None if row is None else json.loads(row["spec"])

    def resolve_sweep(self, sweep: str) -> str:
        with self._connect() as db:
            rows = db.execute("SELECT id FROM sweeps WHERE id = ? OR id LIKE ? LIMIT 2", (sweep, f"{sweep}%")).fetchall()
        if len(rows) != 1:
            raise InputError(f"sweep: {'no' if not rows else 'more than one'} sweep '{sweep}' (see `jobs list`)")
        return rows[0]["id"]

    def counts(self) -> dict[str, int]:
        with self._connect() as db:
            return dict(db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())

    def integrity_check(self) -> str:
        with self._connect() as db:
            return db.execute("PRAGMA integrity_check").fetchone()[0]

    # --------------------------------------------------------------------------- the worker's side

    def claim(self, worker: WorkerInfo, *, max_gpus: int = 0, executor: str = "local") -> Job | None:
        """Atomically take the oldest unclaimed queued job of `executor` needing at most `max_gpus` GPUs.

        A local job becomes `running`; an engine job stays `queued` (claimed: waiting in the engine's queue)
        until `set_engine_state` says it started. None when there is no such job.
        """
        params = {"token": secrets.token_hex(8), "wid": worker.id, "pid": worker.pid, "start": worker.start_time,
                  "host": worker.host, "max_gpus": max_gpus, "now": time.time(), "executor": executor,
                  "state": "running" if executor == "local" else "queued"}
        where = "state = 'queued' AND token IS NULL AND executor = :executor AND gpus <= :max_gpus"
        with self._connect() as db:  # a plain read first: an idle worker polling never takes the write lock
            if db.execute(f"SELECT 1 FROM jobs WHERE {where} LIMIT 1", params).fetchone() is None:
                return None
        with self.transaction() as db:
            row = db.execute(
                "UPDATE jobs SET state = :state, token = :token, worker_id = :wid, worker_pid = :pid,"
                " worker_start = :start, worker_host = :host, attempts = attempts + 1, heartbeat = :now, followed_up = 0,"
                " started = CASE WHEN :state = 'running' THEN :now END, updated = :now, finished = NULL, pid = NULL,"
                " pid_start = NULL, gpu_ids = NULL, engine_id = NULL, reason = NULL, message = NULL, exit_code = NULL"
                f" WHERE seq = (SELECT seq FROM jobs WHERE {where} ORDER BY seq LIMIT 1)"
                " RETURNING *", params).fetchone()
        return Job.from_row(row) if row else None

    def has_unclaimed(self, executor: str) -> bool:
        """Is a job of `executor` waiting to be claimed? (a plain read)"""
        with self._connect() as db:
            return db.execute("SELECT 1 FROM jobs WHERE state = 'queued' AND token IS NULL AND executor = ? LIMIT 1",
                              (executor,)).fetchone() is not None

    def fail_unrunnable(self, *, total_gpus: int) -> int:
        """Fail queued local jobs that need more GPUs than this worker has at all (they would wait forever)."""
        return self._update(
            "UPDATE jobs SET state = 'failed', finished = :now, updated = :now,"
            " reason = 'needs ' || gpus || ' GPUs; the worker has ' || :total"
            " WHERE state = 'queued' AND token IS NULL AND executor = 'local' AND gpus > :total",
            {"total": total_gpus})

    def set_process(self, job_id: str, token: str, *, pid: int | None, pid_start: int | None, step_index: int,
                    gpu_ids: str | None = None, engine_id: str | None = None) -> bool:
        """Record what now runs the job's step `step_index` (a local process, or the engine's job id);
        False if the job is no longer ours."""
        return self._update(
            "UPDATE jobs SET pid = :pid, pid_start = :start, step_index = :step, gpu_ids = COALESCE(:gpus, gpu_ids),"
            " engine_id = COALESCE(:engine, engine_id), heartbeat = :now, updated = :now"
            " WHERE id = :id AND token = :token AND state IN ('queued', 'running')",
            {"id": job_id, "token": token, "pid": pid, "start": pid_start, "step": step_index, "gpus": gpu_ids,
             "engine": engine_id}) == 1

    def set_engine_state(self, job_id: str, token: str, state: JobState, *, reason: str | None = None) -> bool:
        """An engine job of ours started (`running`) or went back to the engine's queue (`queued`, with the
        engine's `reason`, e.g. requeued after a preemption); False if the job is no longer ours."""
        state = JobState(state)
        if state not in (JobState.QUEUED, JobState.RUNNING):
            raise ValueError(f"state: set_engine_state() takes queued or running, got {state.value}")
        return self._update(
            "UPDATE jobs SET state = :state, started = CASE WHEN :state = 'running' THEN :now ELSE started END,"
            " reason = :reason, updated = :now, heartbeat = :now"
            " WHERE id = :id AND token = :token AND state IN ('queued', 'running')",
            {"id": job_id, "token": token, "state": state.value, "reason": reason}) == 1

    def adopt(self, job_id: str, token: str, worker: WorkerInfo) -> Job | None:
        """Take over a claimed engine job from a lost worker (the engine still runs it): a new token, same
        attempt. None if it changed hands meanwhile."""
        with self.transaction() as db:
            row = db.execute(
                "UPDATE jobs SET token = :new, worker_id = :wid, worker_pid = :pid, worker_start = :start,"
                " worker_host = :host, heartbeat = :now, updated = :now"
                " WHERE id = :id AND token = :token AND state IN ('queued', 'running') RETURNING *",
                {"new": secrets.token_hex(8), "wid": worker.id, "pid": worker.pid, "start": worker.start_time,
                 "host": worker.host, "now": time.time(), "id": job_id, "token": token}).fetchone()
        return Job.from_row(row) if row else None

    def heartbeat(self, worker: WorkerInfo, owned: dict[str, str]) -> set[str]:
        """Stamp the worker and its jobs ({job id: token}); returns the ids whose token no longer matches."""
        lost = set()
        with self.transaction() as db:
            now = time.time()
            self._upsert_worker(db, worker, now)
            for job_id, token in owned.items():
                if db.execute("UPDATE jobs SET heartbeat = ? WHERE id = ? AND token = ? AND state IN ('queued', 'running')",
                              (now, job_id, token)).rowcount != 1:
                    lost.add(job_id)
        return lost

    def cancel_requested(self, owned: dict[str, str]) -> set[str]:
        """Which of the worker's jobs ({id: token}) a user asked to cancel."""
        if not owned:
            return set()
        with self._connect() as db:
            rows = db.execute(f"SELECT id, token FROM jobs WHERE cancel_requested = 1 AND id IN ({', '.join('?' * len(owned))})",
                              list(owned)).fetchall()
        return {r["id"] for r in rows if r["token"] == owned[r["id"]]}

    def finish(self, job_id: str, token: str, state: JobState, *, reason: str | None = None,
               message: str | None = None, exit_code: int | None = None) -> bool:
        """Final state of a run (succeeded / failed / cancelled); False if the job is no longer ours."""
        state = JobState(state)
        if not state.finished:
            raise ValueError(f"state: finish() takes a final state, got {state.value}")
        return self._update(
            "UPDATE jobs SET state = :state, reason = :reason, message = :message, exit_code = :code, finished = :now,"
            " updated = :now, token = NULL, pid = NULL, pid_start = NULL"
            " WHERE id = :id AND token = :token AND state IN ('queued', 'running')",
            {"id": job_id, "token": token, "state": state.value, "reason": reason, "message": message,
             "code": exit_code}) == 1

    def requeue(self, job_id: str, token: str, *, reason: str, count_attempt: bool = True,
                message: str | None = None) -> JobState | None:
        """Put a claimed job back in the queue, unclaimed (or fail it at the attempt cap, or cancel it if asked).

        `count_attempt=False` gives the attempt back (the worker was stopped, not the job's fault).
        Returns the new state, or None if the job is no longer ours.
        """
        with self.transaction() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ? AND token IS ? AND state IN ('queued', 'running')",
                             (job_id, token)).fetchone()
            if row is None:
                return None
            attempts = row["attempts"] - (0 if count_attempt else 1)
            if row["cancel_requested"]:
                state, why = JobState.CANCELLED, Reason.CANCELLED
            elif attempts < row["max_attempts"]:
                state, why = JobState.QUEUED, reason
            else:
                state, why = JobState.FAILED, reason
                message = f"gave up after {attempts} of {row['max_attempts']} attempts" + (f"; {message}" if message else "")
            now = time.time()
            db.execute(
                "UPDATE jobs SET state = ?, attempts = ?, reason = ?, message = ?, token = NULL, pid = NULL,"
                " pid_start = NULL, worker_id = NULL, finished = ?, updated = ? WHERE id = ?",
                (state.value, attempts, why, message, now if state.finished else None, now, job_id))
        return state

    def running(self) -> list[Job]:
        return self.list(states=[JobState.RUNNING])

    def claimed(self) -> list[Job]:
        """Jobs some worker holds: running ones, and engine jobs waiting in the engine's queue."""
        with self._connect() as db:
            return [Job.from_row(r) for r in db.execute(
                "SELECT * FROM jobs WHERE state = 'running' OR (state = 'queued' AND token IS NOT NULL) ORDER BY seq")]

    def pending_follow_ups(self) -> list[Job]:
        """Ended jobs whose follow-up hook (toolkit.queue.hooks) has not yet run for their final state."""
        legacy = " OR ".join(f"meta LIKE '%\"{key}\"%'" for key in LEGACY_HOOKS)  # jobs queued before hooks
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled') AND followed_up = 0"
                f" AND (meta LIKE '%\"{ON_FINISH}\"%' OR (sweep_id IS NOT NULL AND ({legacy}))) ORDER BY seq").fetchall()
        return [job for job in map(Job.from_row, rows) if ON_FINISH in job.meta]

    def mark_followed_up(self, job_id: str) -> bool:
        """The job's hook has run for its current final state (False if it is no longer in one)."""
        return self._update("UPDATE jobs SET followed_up = 1 WHERE id = :id AND state IN ('succeeded', 'failed',"
                            " 'cancelled')", {"id": job_id}) == 1

    # ------------------------------------------------------------------------------ the user's side

    def request_cancel(self, job_id: str) -> Job:
        """Cancel: an unclaimed queued job is cancelled at once; a running one, or one waiting in an engine's
        queue, is flagged for its worker to stop (SIGTERM / scancel)."""
        job = self.get(job_id)
        with self.transaction() as db:
            now = time.time()
            if db.execute("UPDATE jobs SET state = 'cancelled', reason = ?, finished = ?, updated = ?"
                          " WHERE id = ? AND state = 'queued' AND token IS NULL",
                          (Reason.CANCELLED, now, now, job.id)).rowcount == 0:
                if db.execute("UPDATE jobs SET cancel_requested = 1, updated = ? WHERE id = ?"
                              " AND state IN ('queued', 'running')", (now, job.id)).rowcount == 0:
                    state = db.execute("SELECT state FROM jobs WHERE id = ?", (job.id,)).fetchone()["state"]
                    raise InputError(f"job {job.id}: already {state}; only queued or running jobs can be cancelled")
        return self.get(job.id)

    def retry(self, job_id: str, *, succeeded: bool = False) -> Job:
        """Re-queue a failed or cancelled job with a fresh attempt count (it resumes from its checkpoints);
        `succeeded=True` also a succeeded one (its steps run again: for steps that skip what is done)."""
        job = self.get(job_id)
        states = ("failed", "cancelled", "succeeded") if succeeded else ("failed", "cancelled")
        with self.transaction() as db:
            if db.execute(
                "UPDATE jobs SET state = 'queued', attempts = 0, retries = retries + 1, cancel_requested = 0, followed_up = 0,"
                " reason = NULL, message = NULL, exit_code = NULL, finished = NULL, token = NULL, updated = ?"
                f" WHERE id = ? AND state IN ({', '.join('?' * len(states))})",
                    (time.time(), job.id, *states)).rowcount == 0:
                state = db.execute("SELECT state FROM jobs WHERE id = ?", (job.id,)).fetchone()["state"]
                raise InputError(f"job {job.id}: is {state}; only failed or cancelled jobs can be retried")
        return self.get(job.id)

    # ------------------------------------------------------------------------------------ workers

    @staticmethod
    def _upsert_worker(db: sqlite3.Connection, w: WorkerInfo, now: float) -> None:
        db.execute("INSERT INTO workers (id, pid, start_time, host, slots, gpus, heartbeat, started)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET heartbeat = excluded.heartbeat",
                   (w.id, w.pid, w.start_time, w.host, w.slots, w.gpus, now, now))

    def register_worker(self, w: WorkerInfo) -> None:
        with self.transaction() as db:
            self._upsert_worker(db, w, time.time())

    def remove_worker(self, worker_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM workers WHERE id = ?", (worker_id,))

    def workers(self) -> list[dict]:
        with self._connect() as db:
            return [dict(r) for r in db.execute("SELECT * FROM workers ORDER BY started")]


def check_writable(folder: Path) -> None:
    """Create `folder` if needed and prove a file can be written there; InputError (one line) if not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{secrets.token_hex(4)}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"jobs folder: cannot write to '{folder}' ({exc.strerror or type(exc).__name__}); "
                         "set CMBA_JOBS_DIR to a writable folder") from None
