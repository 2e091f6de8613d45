"""What the app says while a worker it started is still importing (issue #27): "Worker starting (pid N)", not
"No worker running" right under "Started a background worker"."""

import fcntl
import os
import subprocess
import sys

from toolkit.queue.lifecycle import starting_worker
from toolkit.queue.store import JobStore


def test_a_held_lock_names_the_starting_worker_and_a_free_one_none(tmp_path):
    store = JobStore(tmp_path / "jobs")
    assert starting_worker(store) is None  # no lock file yet
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        fd = os.open(store.folder / "worker.lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as ensure_worker holds it for its child
        os.write(fd, f"{child.pid}\n".encode())
        assert starting_worker(store) == child.pid
        child.kill()
        child.wait()
        assert starting_worker(store) is None  # a dead pid in a lock someone holds is no worker starting
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        assert starting_worker(store) is None  # released: nobody is starting
    finally:
        if child.poll() is None:
            child.kill()
