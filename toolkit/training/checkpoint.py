"""Atomic training checkpoints, safetensors only (no pickle is written or read).

    run_dir/checkpoints/step-0000050/     complete checkpoints (renamed into place when fully written)
    run_dir/checkpoints/.step-0000100.tmp-<pid>/   one being written: never read, removed on the next save

A checkpoint holds the adapter weights, the optimizer state (tensors in safetensors, the rest in JSON), the
RNG states and `state.json` (step, settings fingerprint). It is written under a temporary name, every file is
fsynced, then the folder is renamed: a crash at any moment leaves either the previous complete checkpoints
or the new one, never a partial one that `latest()` would return. The newest `KEEP` are kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

KEEP = 2
_NAME = re.compile(r"^step-(\d{7})$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data) -> None:
    with open(path, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())


def _save_tensors(path: Path, tensors: dict) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _optimizer_split(state_dict: dict) -> tuple[dict, dict]:
    """Optimizer state -> (tensors for safetensors, JSON-able rest)."""
    import torch

    tensors, scalars = {}, {}
    for idx, per_param in state_dict["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}/{key}"] = value
            else:
                scalars[f"{idx}/{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _optimizer_join(tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for flat, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, key = flat.split("/", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_state() -> dict:
    import random

    import numpy as np
    import torch

    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    np_state = np.random.get_state()
    meta = {"python": repr(random.getstate()), "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    return {"tensors": tensors, "meta": meta}


def _set_rng(tensors: dict, meta: dict) -> None:
    import ast
    import random

    import numpy as np
    import torch

    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    random.setstate(ast.literal_eval(meta["python"]))
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def complete(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    folder = checkpoints_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir() and (p / "state.json").exists():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = complete(run_dir)
    return found[-1][1] if found else None


def save(run_dir: Path, step: int, *, adapter: dict, optimizer, state: dict) -> Path:
    """Write checkpoint `step` atomically and prune old ones; returns its folder."""
    folder = checkpoints_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".step-*.tmp-*"):  # leftovers of a crash mid-write
        shutil.rmtree(stale, ignore_errors=True)
    final = folder / f"step-{step:07d}"
    tmp = folder / f".step-{step:07d}.tmp-{os.getpid()}"
    tmp.mkdir()
    _save_tensors(tmp / "adapter.safetensors", adapter)
    opt_tensors, opt_meta = _optimizer_split(optimizer.state_dict())
    if opt_tensors:
        _save_tensors(tmp / "optimizer.safetensors", opt_tensors)
    _write_json(tmp / "optimizer.json", opt_meta)
    rng = _rng_state()
    _save_tensors(tmp / "rng.safetensors", rng["tensors"])
    _write_json(tmp / "rng.json", rng["meta"])
    _write_json(tmp / "state.json", {**state, "step": step})  # last: marks the content complete
    _fsync_dir(tmp)
    if final.exists():  # the same step saved again (e.g. on a signal right after a periodic save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(folder)
    for _, old in complete(run_dir)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(path: Path, optimizer) -> tuple[dict, dict]:
    """Restore optimizer and RNG states from a checkpoint; returns (adapter tensors, state)."""
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text())
    adapter = load_file(str(path / "adapter.safetensors"))
    opt_tensors = load_file(str(path / "optimizer.safetensors")) if (path / "optimizer.safetensors").exists() else {}
    optimizer.load_state_dict(_optimizer_join(opt_tensors, json.loads((path / "optimizer.json").read_text())))
    _set_rng(load_file(str(path / "rng.safetensors")), json.loads((path / "rng.json").read_text()))
    return adapter, state


def remove_all(run_dir: Path) -> None:
    shutil.rmtree(checkpoints_dir(run_dir), ignore_errors=True)
