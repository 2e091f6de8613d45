"""Pre-flight checks of a sweep: what can be known before queueing, so a job does not fail on it later.

    problems = preflight(spec)          # [] or one line per problem, each naming the field it is about
    check(spec)                         # InputError with those lines, joined (submit_sweep calls this)

A sweep's settings are validated when it is planned (toolkit.study.sweep); this module checks the machine:
- model: the weights can be loaded here (the demo model ships with the repository; a local folder holds
  weight files; a Hub model is in the local cache or the Hub is reachable). A configs-only preset names the
  Hub model its config comes from.
- dataset: the training split and the evaluation split are readable (one record each is loaded).
- quantize 4bit: bitsandbytes runs a 4-bit round trip on the device the jobs use (a GPU when they get one).
Slurm sweeps run elsewhere: the cluster's nodes are not this machine, so these checks are left to the jobs.
"""

from __future__ import annotations

from pathlib import Path

from toolkit.errors import CmbaError, InputError

WEIGHT_FILES = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


def _has_weights(folder: Path) -> bool:
    return any(next(folder.glob(pattern), None) for pattern in WEIGHT_FILES)


def _cached_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The Hub model's folder in the local cache when it holds weight files, else None."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or an unreadable cache): same answer
        return None
    return folder if _has_weights(folder) else None


def weights_problem(structure, *, revision: str | None = None) -> str | None:
    """Why the weights of `structure`'s model cannot be loaded here, or None when they can."""
    from toolkit.calculator.structure import _hub_reachable
    from toolkit.training.modeling import model_source

    try:
        source, hub_id = model_source(structure)
    except InputError as exc:
        return str(exc)
    if hub_id is None:
        if _has_weights(Path(source)):
            return None
        return (f"model: '{source}' holds a config but no weights ({', '.join(WEIGHT_FILES[:2])}); save the model "
                "there with save_pretrained, or train the offline `demo` preset")
    if _cached_snapshot(hub_id, revision) is not None or _hub_reachable():
        return None
    what = (f"the preset '{structure.model_id}' is the config of {hub_id}, whose weights"
            if structure.source == "preset" else f"the weights of '{hub_id}'")
    return (f"model: {what} are not on this machine and the Hub is unreachable (offline); train the offline `demo` "
            "preset, or pass a local folder with weights")


def dataset_problem(spec, split: str, *, part: str = "train") -> str | None:
    """Why `split` of the sweep's dataset cannot be read, or None (loads one record)."""
    from toolkit.data.sources import load_vqa

    s = spec.settings
    try:
        load_vqa(s.dataset, split=split, limit=1, columns=s.columns, image_dir=s.image_dir,
                 revision=s.dataset_revision, config=s.dataset_config, holdout=s.holdout, part=part)
    except CmbaError as exc:
        return str(exc)
    return None


def quantize_problem(spec) -> str | None:
    """Why 4-bit training cannot run on the jobs' device here, or None (also None without --quantize)."""
    if spec.settings.quantize != "4bit":
        return None
    import torch

    from toolkit.training.modeling import check_bitsandbytes

    if spec.gpus_per_job and not torch.cuda.is_available():
        return "quantize: 4bit jobs get a GPU each, but torch sees no CUDA GPU here"
    try:
        check_bitsandbytes(torch.device("cuda" if spec.gpus_per_job else "cpu"))
    except InputError as exc:
        return str(exc)
    return None


def preflight(spec, *, structure=None) -> list[str]:
    """Every problem this machine has with the sweep `spec` (a SweepSpec), one line each; [] when none."""
    if spec.executor != "local":
        return []
    if structure is None:
        structure = spec.settings.structure
    split = spec.settings.split
    problems = [weights_problem(structure, revision=spec.settings.revision), dataset_problem(spec, split)]
    if spec.eval_split:
        holdout = bool(spec.settings.holdout)
        eval_problem = dataset_problem(spec, split if holdout else spec.eval_split, part="holdout" if holdout else "train")
        if eval_problem and eval_problem not in problems:
            problems.append(f"eval split: {eval_problem}" if not eval_problem.startswith("split") else eval_problem)
    problems.append(quantize_problem(spec))
    return [p for p in problems if p]


def check(spec, *, structure=None) -> None:
    """InputError (one line) when `preflight` finds a problem."""
    problems = preflight(spec, structure=structure)
    if problems:
        raise InputError("; ".join(problems) + " (nothing was queued)")
