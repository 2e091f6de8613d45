"""The CLI's progress (toolkit/progressbar.py): plain lines off a terminal, a tqdm bar on one; and what
`evaluate` reports about its time, run for real in a pseudo-terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from tests.helpers.jobscript import PATIENCE
from toolkit.progressbar import Bar

ROOT = Path(__file__).resolve().parents[1]


def _terminal() -> tuple[int, int]:
    """A pseudo-terminal 120 columns wide (a fresh one is 0 x 0, where tqdm draws an empty bar)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    return master, slave


def _read_all(master: int) -> bytes:
    """Everything written to a pseudo-terminal whose other end is closed."""
    drawn = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: nothing more, the other end is closed
            break
        if not chunk:
            break
        drawn += chunk
    os.close(master)
    return drawn


def test_plain_lines_off_a_terminal(tmp_path):
    lines = []
    with open(tmp_path / "log", "w") as not_a_tty, Bar(total=25, desc="train x", unit="step", log=lines.append,
                                                         stream=not_a_tty) as bar:
        assert not bar.is_tty
        for _ in range(25):
            bar.update(1, loss="0.5")
    assert lines == [f"train x: {n}/25 step, loss 0.5" for n in (1, 10, 20, 25)]  # first, every 10th, last
    resumed = []
    with Bar(total=30, initial=20, unit="step", log=resumed.append, line=lambda d, t, _: f"step {d}/{t}",
             stream=open(os.devnull, "w")) as bar:  # noqa: SIM115 - closed with the process
        for _ in range(10):
            bar.update(1)
    assert resumed == ["step 21/30", "step 30/30"]


def test_a_bar_on_a_terminal():
    master, slave = _terminal()
    lines = []
    with os.fdopen(slave, "w") as tty:
        with Bar(total=5, desc="push", unit="file", log=lines.append, stream=tty) as bar:
            assert bar.is_tty
            for _ in range(5):
                bar.update(1, loss="0.1")
    drawn = _read_all(master).decode()
    assert lines == [] and "\r" in drawn and "5/5" in drawn and "push" in drawn and "loss=0.1" in drawn


@pytest.mark.slow  # loads the demo model in a subprocess: 5-20 s
def test_evaluate_reports_loading_and_generation_time_and_draws_a_bar_on_a_terminal(tmp_path):
    master, slave = _terminal()
    env = {**os.environ, "CMBA_ADAPTERS_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1", "COLUMNS": "120"}
    proc = subprocess.Popen([sys.executable, "-m", "toolkit", "evaluate", "--base", "demo", "--dataset",
                             "synthetic:shapes?n=64", "--split", "validation", "--limit", "16", "--batch-size", "4"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    out, _ = proc.communicate(timeout=PATIENCE)
    drawn = _read_all(master)
    assert proc.returncode == 0, drawn.decode(errors="replace")
    first = out.splitlines()[0]
    assert " on 16 questions of synthetic:shapes?n=64 (validation) in " in first
    total, load, generation = (float(x) for x in
                               __import__("re").search(r"in ([\d.]+) s \(loading model and data ([\d.]+) s, "
                                                       r"generation ([\d.]+) s\)$", first).groups())
    assert load > 0 and generation > 0 and abs(total - load - generation) < 0.2
    assert "16/16" in drawn.decode(errors="replace") and b"\r" in drawn  # tqdm's bar, not log lines
    assert b"evaluated 16/16 questions" not in drawn
