"""Where the runtime workspaces live: `jobs/` and `adapters/` at the project root by default.

Both are overridable with environment variables so tests (and users with a big scratch disk) can put them
elsewhere: `CMBA_JOBS_DIR`, `CMBA_ADAPTERS_DIR`.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def adapters_dir() -> Path:
    """The local adapter store: one folder per trained adapter."""
    return Path(os.environ.get("CMBA_ADAPTERS_DIR") or PROJECT_ROOT / "adapters")


def jobs_dir() -> Path:
    """The job system's workspace: SQLite store, logs."""
    return Path(os.environ.get("CMBA_JOBS_DIR") or PROJECT_ROOT / "jobs")
