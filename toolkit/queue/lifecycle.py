"""Workers seen from outside: starting one for the app, the lock that allows one per jobs folder, liveness.

    ensure_worker()                   # from the app: start a detached worker unless a live one exists
    revive_worker()                   # the app's live panel: start one when queued jobs have no worker
    live_workers()                    # rows of the workers table whose worker is alive
    fd = acquire_lock(jobs_dir() / "worker.lock")     # what `python -m toolkit worker` holds for its life

One worker per jobs folder holds `jobs_dir()/worker.lock` (flock) for its whole life, so racing callers of
`ensure_worker()` never start two (the lock is taken by the caller and handed to the child as an inherited
descriptor). A worker is alive when its heartbeat in the store is fresher than the lease and, on this host,
its pid still belongs to the process that registered (pid + /proc start time, so a reused pid does not count).
The loop itself is toolkit.queue.worker.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from toolkit.errors import InputError
from toolkit.paths import PROJECT_ROOT
from toolkit.queue.executor import process_alive
from toolkit.queue.store import JobStore

LEASE_S = float(os.environ.get("CMBA_JOB_LEASE_S") or 30.0)
"""a running job whose heartbeat is older than this is considered lost (its worker stopped stamping it)"""


def worker_alive(row: dict, *, lease_s: float = LEASE_S, host: str | None = None) -> bool:
    """A workers-table row is a live worker: fresh heartbeat and (on this host) its pid + start time exist."""
    host = host or socket.gethostname()
    if time.time() - row["heartbeat"] > lease_s:
        return False
    return row["host"] != host or process_alive(row["pid"], row["start_time"])


def live_workers(store: JobStore | None = None) -> list[dict]:
    store = store or JobStore()
    return [w for w in store.workers() if worker_alive(w)]


def acquire_lock(path: Path, fd: int | None = None) -> int:
    """Hold the exclusive worker lock (an inherited `fd` or a new one); InputError if another worker has it."""
    if fd is None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise InputError(f"worker: another worker already holds {path}; stop it first, or pass --extra to run "
                         "one more beside it") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def ensure_worker(*, slots: int | None = None, gpus: str = "auto", idle_exit_s: float = 900.0,
                  store: JobStore | None = None) -> dict:
    """Start a detached worker unless a live one exists; it outlives the caller (e.g. a Streamlit restart).

    Returns {"started": bool, "pid": int | None}. The lock is taken here and handed to the child (an
    inherited descriptor), so it is held without a gap and racing callers start one worker at most.

        >>> ensure_worker()           # doctest: +SKIP
        {'started': True, 'pid': 12345}
    """
    store = store or JobStore()
    live = live_workers(store)
    if live:
        return {"started": False, "pid": live[0]["pid"]}
    lock_path = store.folder / "worker.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # a worker holds it (starting up, or alive without a fresh heartbeat yet)
        os.close(fd)
        return {"started": False, "pid": None}
    argv = [sys.executable, "-m", "toolkit", "worker", "--lock-fd", str(fd), "--idle-exit", f"{idle_exit_s:g}",
            "--gpus", gpus] + (["--slots", str(slots)] if slots else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    try:
        with open(store.folder / "worker.log", "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True, pass_fds=(fd,), cwd=PROJECT_ROOT, env=env)
        os.ftruncate(fd, 0)  # who holds the lock while the child imports (`starting_worker`); it writes itself again
        os.write(fd, f"{proc.pid}\n".encode())
    finally:
        os.close(fd)  # the child's copy keeps the lock
    return {"started": True, "pid": proc.pid}


def starting_worker(store: JobStore | None = None) -> int | None:
    """The pid of a worker that holds the worker lock but has not registered yet (it is still importing, a few
    seconds to a minute on a busy machine), or None: what the app says instead of "no worker running" then."""
    store = store or JobStore()
    path = store.folder / "worker.lock"
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = path.read_text().strip()
        pid = int(text) if text.isdigit() else None
        return pid if pid is None or process_alive(pid, None) else None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def revive_worker(store: JobStore | None = None, *, workers: list | None = None) -> dict | None:
    """Start a worker when local jobs wait in the queue and no worker is alive (one died, e.g. on a store held
    locked past its patience); None when nothing was needed. What the app's live panel calls every refresh,
    passing the `live_workers` it already read."""
    store = store or JobStore()
    if (live_workers(store) if workers is None else workers) or not store.has_unclaimed("local"):
        return None
    return ensure_worker(store=store)
