"""One split of a `datasets` dataset, opened with `datasets.load_dataset`; what users run into is one line.

Used by toolkit.data.sources (`load_vqa` on anything that is neither synthetic nor JSONL):

    >>> opened = open_split("lmms-lab/VQAv2", split="validation")      # Hub id: online, or its cache offline
    >>> opened = open_split("/data/vqav2", split="validation")         # a folder of data/<split>-*.parquet files
    >>> opened = open_split("/data/saved", split="validation")         # a folder written by save_to_disk
    >>> opened.dataset, opened.splits, opened.revision
    (Dataset({...}), ('validation', 'testdev', 'test'), '<the Hub commit sha>')

The dataset's split names are read before anything is downloaded (`datasets.load_dataset_builder`: the data files
of each split, else the split infos of a cached copy), so a split it lacks is refused at once, naming those it
has and what to run instead (`missing_split`): lmms-lab/VQAv2 has validation, testdev and test, no train, so the
answer is image-disjoint parts of validation (`--split validation --holdout 0.1`, toolkit.data.hygiene).

A dataset published as a loading script (HuggingFaceM4/VQAv2's `VQAv2.py`) is refused in one line: the installed
`datasets` no longer runs loading scripts. A Hub id while the Hub is unreachable is read from the `datasets` cache
that an earlier download left (HF_HOME or HF_DATASETS_CACHE; HF_HUB_OFFLINE=1 skips the network altogether), and
refused in one line when the cache holds no copy.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import InputError

HOLDOUT_HINT = ("train and evaluate on image-disjoint parts of validation with --split validation --holdout 0.1 "
                "(train uses 90 % of its images, evaluate with the same flags scores the other 10 %)")
"""what to run on a dataset that has a validation split and no train split (lmms-lab/VQAv2)"""
SHA = re.compile(r"[0-9a-f]{40}")
PLAIN_SPLIT = re.compile(r"[\w.-]+")
"""a split name alone; anything else (validation[:10%], a+b) is datasets' split syntax, checked by datasets"""


@dataclass(frozen=True)
class OpenedSplit:
    dataset: object
    """the split, a `datasets.Dataset`"""
    splits: tuple[str, ...]
    """every split the dataset has (for hints: which to use instead)"""
    revision: str | None
    """the Hub commit the data came from, else the dataset's version"""


def missing_split(spec: str, split: str, names) -> InputError:
    """The one-line refusal of a split that `spec` lacks, naming its splits and what to run instead.

        >>> str(missing_split("lmms-lab/VQAv2", "train", ["validation", "testdev", "test"])).split(";")[0]
        "split: 'train' is not in lmms-lab/VQAv2 (it has validation, testdev, test)"
    """
    names = list(names)
    if "validation" in names and "train" not in names and split != "validation":
        hint = HOLDOUT_HINT
    else:
        hint = "pick one of them with --split"
    return InputError(f"split: '{split}' is not in {spec} (it has {', '.join(names) or 'no splits'}); {hint}")


def answered_hint(split: str, names) -> str:
    """What to use instead of a split without answers."""
    if "train" in names and split != "train":
        return "use --split train"
    if "validation" in names and split != "validation":
        return "use a split with answers: " + HOLDOUT_HINT
    return "use a split with answers"


def script_only(spec: str, script: str) -> InputError:
    import datasets

    instead = ("use the parquet copy lmms-lab/VQAv2 instead, which has no train split: " + HOLDOUT_HINT
               if "vqa" in spec.lower()
               else "use a copy in parquet or another data format, or a folder written by save_to_disk")
    return InputError(f"dataset: '{spec}' is a loading script ({script}), and the installed datasets "
                      f"{datasets.__version__} no longer runs loading scripts; {instead}")


@contextmanager
def _quiet_hub():
    """huggingface_hub's warnings (a card without metadata...) would make a one-line error two lines."""
    import logging

    logger = logging.getLogger("huggingface_hub")
    before = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(before)


@contextmanager
def _offline():
    """datasets reads its cache without asking the Hub (as under HF_HUB_OFFLINE=1) for the duration."""
    from datasets import config

    before = config.HF_HUB_OFFLINE
    config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        config.HF_HUB_OFFLINE = before


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _script_in(path: Path) -> str | None:
    """The loading script a local dataset folder holds (`<folder>.py`, else any top-level .py), or None."""
    if not path.is_dir():
        return None
    own = path / f"{path.name}.py"
    if own.is_file():
        return own.name
    scripts = sorted(p.name for p in path.glob("*.py"))
    return scripts[0] if scripts else None


def _saved(spec: str, path: Path, split: str) -> OpenedSplit:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise missing_split(f"'{spec}'", split, loaded)
        return OpenedSplit(loaded[split], tuple(loaded), None)
    return OpenedSplit(loaded, (split,), None)


def _builder(spec: str, path: Path, *, config, revision, hub_id: bool, offline: bool):
    import datasets
    from datasets.data_files import EmptyDatasetError

    try:
        if offline:
            with _offline():
                return datasets.load_dataset_builder(spec, config, revision=revision)
        return datasets.load_dataset_builder(spec, config, revision=revision)
    except RuntimeError as exc:
        found = re.search(r"found (\S+\.py)", str(exc))
        if found:
            raise script_only(spec, found.group(1)) from None
        raise
    except (datasets.exceptions.DataFilesNotFoundError, EmptyDatasetError) as exc:
        script = _script_in(path)
        if script:
            raise script_only(spec, script) from None
        raise InputError(f"dataset: no data files in '{spec}' ({_first_line(exc)}); give a folder of parquet, JSON "
                         f"or CSV files, a folder written by save_to_disk, or a JSONL file") from None
    except ConnectionError as exc:  # the Hub unreachable and no copy in the cache
        if not offline:
            raise InputError(f"dataset: cannot reach the Hugging Face Hub for '{spec}' ({_first_line(exc)})") from None
        from datasets import config as dconfig

        raise InputError(f"dataset: '{spec}' is not a local file or folder, the Hugging Face Hub is unreachable "
                         f"(offline), and the datasets cache ({dconfig.HF_DATASETS_CACHE}) holds no copy of it; load "
                         f"it once online, or use synthetic:shapes, a local JSONL file, or a dataset folder") from None
    except datasets.exceptions.DatasetNotFoundError as exc:
        raise InputError(f"dataset: cannot load '{spec}' ({_first_line(exc)})") from None
    except FileNotFoundError as exc:
        if hub_id and offline:
            raise InputError(f"dataset: '{spec}' is not a local file or folder and the Hugging Face Hub is unreachable "
                             "(offline); use synthetic:shapes, a local JSONL file, or a saved dataset folder"
                             ) from None
        raise InputError(f"dataset: cannot load '{spec}' ({_first_line(exc)})") from None


def _splits_of(builder) -> tuple[str, ...]:
    """Split names without downloading: the data files per split (folders, Hub repos), else the cached copy's infos."""
    files = getattr(builder.config, "data_files", None) or {}
    return tuple(files) or tuple(builder.info.splits or {})


def open_split(spec: str, *, split: str, config: str | None = None, revision: str | None = None) -> OpenedSplit:
    """`split` of a `datasets` dataset (see the module docstring); every failure a user can act on is an InputError."""
    import datasets

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    with _quiet_hub():
        return _open(spec, split=split, config=config, revision=revision)


def _open(spec: str, *, split: str, config: str | None, revision: str | None) -> OpenedSplit:
    import datasets

    from toolkit.calculator.structure import _hub_reachable

    path = Path(spec)
    try:
        if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            return _saved(spec, path, split)
        hub_id = not path.exists()
        offline = hub_id and not _hub_reachable()
        builder = _builder(spec, path, config=config, revision=revision, hub_id=hub_id, offline=offline)
        names = _splits_of(builder)
        if names and PLAIN_SPLIT.fullmatch(split) and split not in names:
            raise missing_split(spec if hub_id else f"'{spec}'", split, names)
        if offline:
            with _offline():
                ds = datasets.load_dataset(spec, config, split=split, revision=revision)
        else:
            ds = datasets.load_dataset(spec, config, split=split, revision=revision)
    except InputError:
        raise
    except ValueError as exc:
        msg = _first_line(exc)
        if "split" in msg.lower():
            raise InputError(f"split: '{split}' is not available in '{spec}' ({msg})") from None
        raise InputError(f"dataset: cannot load '{spec}' ({msg})") from None
    except (OSError, datasets.exceptions.DatasetsError) as exc:
        raise InputError(f"dataset: cannot load '{spec}' ({_first_line(exc)})") from None
    sha = str(getattr(builder, "hash", "") or "")
    seen = revision or (sha if hub_id and SHA.fullmatch(sha) else None) or getattr(ds.info, "version", None)
    return OpenedSplit(ds, names or (split,), str(seen) if seen else None)
