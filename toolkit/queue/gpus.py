"""Which GPUs this machine offers, and which of them a worker may use (`--gpus`).

    detect_gpus()                    # ['0', '1'] from CUDA_VISIBLE_DEVICES, nvidia-smi or torch; [] on a CPU machine
    parse_gpus("0,1", detect_gpus()) # checked against what exists (InputError otherwise)

The worker sizes its slots from these; a sweep asks whether to plan GPU jobs; the export job too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from toolkit.errors import InputError


def detect_gpus() -> list[str]:
    """GPU ids this machine offers: CUDA_VISIBLE_DEVICES when set, else `nvidia-smi -L`, else torch."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        return [line.split(":")[0].split()[1] for line in out.splitlines() if line.startswith("GPU ")]
    if Path("/dev/nvidia0").exists():  # a driver without nvidia-smi: ask torch (slow import, so only here)
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    return []


def parse_gpus(text: str | None, available: list[str]) -> list[str]:
    """`auto` (all detected), `none`, or a list like `0,1` checked against what exists."""
    text = (text or "auto").strip().lower()
    if text == "auto":
        return list(available)
    if text in ("none", "cpu", ""):
        return []
    wanted = [g.strip() for g in text.split(",") if g.strip()]
    missing = [g for g in wanted if g not in available]
    if missing:
        have = f"GPUs {', '.join(available)}" if available else "no GPU"
        raise InputError(f"gpus: GPU {', '.join(missing)} asked for, but this machine has {have} "
                         "(use --gpus auto, none, or ids that exist)")
    if len(set(wanted)) != len(wanted):
        raise InputError(f"gpus: '{text}' names a GPU twice")
    return wanted
