"""What the fault-injection and bad-input suites share: a real trained adapter, and damaged copies of files.

    folder = train_adapter(tmp / "adapters" / "a")        # demo model, 2 steps, evaluated on 4 questions
    truncate(folder / "adapter_model.safetensors")        # cut in half: its header still parses
    one_line_error(rc, err, "adapter")                     # exit 2, one `error: ...` line naming the field

The adapter is trained and evaluated in-process through the CLI (`toolkit.cli.main`), the way a user would,
so every damaged copy is a copy of a real PEFT adapter folder with a real cmba.json and evaluation.
"""

from __future__ import annotations

import os
from pathlib import Path

from toolkit.cli import main

TRAIN = ["--model", "demo", "--dataset", "synthetic:shapes?n=40", "--ratio", "1:1:1", "--budget-rank", "2",
         "--batch-size", "2", "--no-progress"]


def train_adapter(folder: Path, *, steps: int = 2, evaluate: bool = True) -> Path:
    assert main(["train", *TRAIN, "--max-steps", str(steps), "--output", str(folder)]) == 0
    if evaluate:
        assert main(["evaluate", "--adapter", str(folder), "--dataset", "synthetic:shapes?n=40",
                     "--split", "validation", "--limit", "4", "--batch-size", "4"]) == 0
    return folder


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def scramble(path: Path) -> None:
    path.write_bytes(os.urandom(max(64, path.stat().st_size)))


def one_line_error(rc: int, err: str, field: str, *, code: int = 2) -> str:
    """The CLI contract for bad input: `code`, exactly one stderr line `error: ...` naming `field`, no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == code, err
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and field in lines[0], lines[0]
    return lines[0]
