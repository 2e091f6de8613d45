"""Atomic training checkpoints, safetensors only (no pickle is written or read).

    run_dir/checkpoints/step-0000050/     complete checkpoints (renamed into place when fully written)
    run_dir/checkpoints/.step-0000100.tmp-<pid>/   one being written: never read, removed on the next save

A checkpoint holds the adapter weights, the optimizer state (tensors in safetensors, the rest in JSON), the
RNG states and `state.json` (step, settings fingerprint, and the sha256 of every other file). It is written
under a temporary name, every file is fsynced, then the folder is renamed: a crash at any moment leaves either
the previous complete checkpoints or the new one, never a partial one that `latest()` would return. The newest
`KEEP` are kept. Where checkpoints live and which are complete is the run folder's business (toolkit.runs);
this module does the tensor I/O.

`restore` is what a resume calls: it takes the newest checkpoint that verifies (state.json readable, its step
that of the folder and within the run, every file's digest and tensor extents right, every tensor finite) and
says why it passed over damaged ones; when none verifies it is a one-line error, never a traceback.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from toolkit import runs, tensorfile
from toolkit.errors import CmbaError, InputError

KEEP = 2
FILES = ("adapter.safetensors", "optimizer.safetensors", "optimizer.json", "rng.safetensors", "rng.json")


class Damaged(Exception):
    """A checkpoint that does not verify (the message says why)."""


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
    digests = {name: tensorfile.sha256(tmp / name) for name in FILES if (tmp / name).is_file()}
    # last: marks the content complete, and says what it must hash to
    runs.write_json(tmp / runs.CHECKPOINT_STATE, {**state, "step": step, "files": digests})
    _fsync_dir(tmp)
    if final.exists():  # the same step saved again (e.g. on a signal right after a periodic save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(folder)
    for _, old in complete(run_dir)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _state(path: Path, step: int, max_steps: int) -> dict:
    try:
        state = runs.read_json(path / runs.CHECKPOINT_STATE, label="state.json")
    except CmbaError as exc:
        raise Damaged(str(exc)) from None
    if state.get("step") != step:
        raise Damaged(f"state.json says step {state.get('step')!r}, the folder step {step}")
    if not 1 <= step <= max_steps:
        raise Damaged(f"step {step} is outside this run (1..{max_steps})")
    if not isinstance(state.get("train_time_s"), int | float):
        raise Damaged("state.json has no train_time_s")
    files = state.get("files")
    if files is not None and (not isinstance(files, dict) or "adapter.safetensors" not in files):
        raise Damaged("state.json lists no digests")
    return state


def _tensors(path: Path, name: str, files: dict | None) -> dict:
    from safetensors.torch import load_file

    file = path / name
    if not file.is_file():
        raise Damaged(f"{name} is missing")
    if files is not None and tensorfile.sha256(file) != files.get(name):
        raise Damaged(f"{name} does not match its digest")
    try:
        tensorfile.check(file, label=name)
        tensors = load_file(str(file))
    except (CmbaError, OSError, RuntimeError, ValueError) as exc:
        raise Damaged(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    return tensors


def _json(path: Path, name: str, files: dict | None) -> dict:
    if files is not None and (not (path / name).is_file() or tensorfile.sha256(path / name) != files.get(name)):
        raise Damaged(f"{name} is missing or does not match its digest")
    try:
        return runs.read_json(path / name, label=name)
    except CmbaError as exc:
        raise Damaged(str(exc)) from None


def load(path: Path, optimizer, *, max_steps: int | None = None) -> tuple[dict, dict]:
    """Verify checkpoint `path`, then restore optimizer and RNG states; returns (adapter tensors, state).
    Raises `Damaged` (nothing restored) when it does not verify."""
    import torch

    step = int(path.name.split("-")[-1])
    state = _state(path, step, max_steps or step)
    files = state.get("files")
    adapter = _tensors(path, "adapter.safetensors", files)
    has_opt = (files is not None and "optimizer.safetensors" in files) or (path / "optimizer.safetensors").exists()
    opt_tensors = _tensors(path, "optimizer.safetensors", files) if has_opt else {}
    bad = next((k for k, v in {**adapter, **opt_tensors}.items()
                if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise Damaged(f"tensor '{bad}' holds NaN or infinite values")
    opt_meta, rng_meta = _json(path, "optimizer.json", files), _json(path, "rng.json", files)
    rng = _tensors(path, "rng.safetensors", files)
    try:
        optimizer.load_state_dict(_optimizer_join(opt_tensors, opt_meta))
        _set_rng(rng, rng_meta)
    except (KeyError, ValueError, TypeError, RuntimeError, SyntaxError, IndexError, AttributeError) as exc:
        raise Damaged(f"optimizer or RNG state does not fit this run ({type(exc).__name__})") from None
    return adapter, state


def restore(run_dir: Path, optimizer, *, fingerprint: str, max_steps: int, log) -> tuple[Path, dict, dict] | None:
    """(folder, adapter tensors, state) of the newest checkpoint that verifies; None when the run has none.

    Damaged ones are passed over with a log line each; a checkpoint made with other settings is an InputError
    (resuming it would mix two runs); when checkpoints exist but none verifies, an InputError names why.
    """
    found = complete(run_dir)
    reasons = []
    for _, path in reversed(found):
        try:
            recorded = runs.read_json(path / runs.CHECKPOINT_STATE, label="state.json").get("fingerprint")
        except CmbaError:
            recorded = fingerprint  # unreadable: load() says why
        if recorded != fingerprint:
            raise InputError(f"resume: the checkpoint in '{run_dir}' was made with other settings (model, data, "
                             f"allocation or hyper-parameters differ); use the same flags or --overwrite")
        try:
            adapter, state = load(path, optimizer, max_steps=max_steps)
        except Damaged as exc:
            reasons.append(f"{path.name}: {exc}")
            log(f"warning: checkpoint {path.name} is damaged ({exc}); trying an older one")
            continue
        return path, adapter, state
    if reasons:
        raise InputError(f"resume: no valid checkpoint in '{checkpoints_dir(run_dir)}' ({'; '.join(reasons)}); "
                         f"start again with --overwrite")
    return None


def remove_all(run_dir: Path) -> None:
    shutil.rmtree(checkpoints_dir(run_dir), ignore_errors=True)
