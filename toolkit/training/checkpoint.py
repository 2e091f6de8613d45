"""Atomic training checkpoints, safetensors only (no pickle is written or read).

    run_dir/checkpoints/step-0000050/     complete checkpoints (renamed into place when fully written)
    run_dir/checkpoints/.step-0000100.tmp-<pid>/   one being written: never read, removed on the next save

A checkpoint holds the adapter weights, the optimizer state (tensors in safetensors, the rest in JSON), the
RNG states and `state.json` (step, settings fingerprint). It is written under a temporary name, every file is
fsynced, then the folder is renamed: a crash at any moment leaves either the previous complete checkpoints
or the new one, never a partial one that `latest()` would return. The newest `KEEP` are kept. Where checkpoints
live and which are complete is the run folder's business (toolkit.runs); this module does the tensor I/O.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from toolkit import runs

KEEP = 2


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


checkpoints_dir = runs.checkpoints_dir
complete = runs.complete_checkpoints
"""(step, folder) of the complete checkpoints, oldest first"""
latest = runs.latest_checkpoint
"""the newest complete checkpoint, or None"""


def save(run_dir: Path, step: int, *, adapter: dict, optimizer, state: dict) -> Path:
    """Write checkpoint `step` atomically and prune old ones; returns its folder."""
    folder = checkpoints_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".step-*.tmp-*"):  # leftovers of a crash mid-write
        shutil.rmtree(stale, ignore_errors=True)
    final = runs.checkpoint_path(run_dir, step)
    tmp = folder / f".{final.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    _save_tensors(tmp / "adapter.safetensors", adapter)
    opt_tensors, opt_meta = _optimizer_split(optimizer.state_dict())
    if opt_tensors:
        _save_tensors(tmp / "optimizer.safetensors", opt_tensors)
    runs.write_json(tmp / "optimizer.json", opt_meta)
    rng = _rng_state()
    _save_tensors(tmp / "rng.safetensors", rng["tensors"])
    runs.write_json(tmp / "rng.json", rng["meta"])
    runs.write_json(tmp / runs.CHECKPOINT_STATE, {**state, "step": step})  # last: marks the content complete
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

    state = runs.read_json(path / runs.CHECKPOINT_STATE, label="checkpoint")
    adapter = load_file(str(path / "adapter.safetensors"))
    opt_tensors = load_file(str(path / "optimizer.safetensors")) if (path / "optimizer.safetensors").exists() else {}
    optimizer.load_state_dict(_optimizer_join(opt_tensors, runs.read_json(path / "optimizer.json", label="checkpoint")))
    _set_rng(load_file(str(path / "rng.safetensors")), runs.read_json(path / "rng.json", label="checkpoint"))
    return adapter, state


def remove_all(run_dir: Path) -> None:
    shutil.rmtree(checkpoints_dir(run_dir), ignore_errors=True)
