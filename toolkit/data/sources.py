"""VQA data from three kinds of source, as one sequence of `VQARecord`s.

    >>> ds = load_vqa("synthetic:shapes?n=2000&seed=0", split="train")
    >>> ds = load_vqa("lmms-lab/VQAv2", split="validation", limit=500)        # Hub id (online)
    >>> ds = load_vqa("/data/vqav2_parquet", split="validation", limit=500)   # local `datasets` folder
    >>> ds = load_vqa("/data/my_vqa.jsonl", image_dir="/data/images")         # JSONL + image folder
    >>> ds[0].question, ds[0].answers, ds.info.to_dict()

A record has `question_id`, `image`, `question`, `answers` (1-10 human answers), and optionally
`answer_type` and `question_type` (DESIGN.md, Data). Column names are found automatically for the usual
layouts (VQAv2 mirrors such as lmms-lab/VQAv2 and HuggingFaceM4/VQAv2 keep `answers` as a list of
`{"answer", "answer_confidence", "answer_id"}`); anything else is mapped with `columns`, e.g.
`{"question": "query", "answers": "labels"}` (CLI: `--columns question=query,answers=labels`).

`limit` takes a deterministic subset: `sample_seed` (not the training seed) picks which records, so every run
of a sweep trains and evaluates on the same questions. Sources are validated before anything is trained:
missing columns, an empty dataset, records without answers and unreadable images are one-line errors.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

from toolkit.errors import InputError

FIELDS = ("question_id", "image", "question", "answers", "answer_type", "question_type")
REQUIRED = ("image", "question", "answers")
ALIASES = {
    "question_id": ("question_id", "qid", "id"),
    "image": ("image", "img", "image_path", "file_name", "image_file", "picture"),
    "question": ("question", "query", "prompt"),
    "answers": ("answers", "answer", "multiple_choice_answer", "labels", "label"),
    "answer_type": ("answer_type",),
    "question_type": ("question_type",),
}
VERIFY_LIMIT = 5000
"""Images checked before training for `datasets` sources (all of them for local JSONL and synthetic data)."""


@dataclass
class VQARecord:
    question_id: str | int
    image: object
    """PIL image, RGB"""
    question: str
    answers: list[str]
    answer_type: str | None = None
    question_type: str | None = None

    @property
    def answer(self) -> str:
        """The training target: the most frequent human answer (the first of equals)."""
        counts = Counter(self.answers)
        return max(self.answers, key=lambda a: (counts[a], -self.answers.index(a)))


@dataclass
class DatasetInfo:
    """Provenance of a loaded dataset, recorded in cmba.json and evaluation results."""

    id: str
    split: str
    size: int
    """records used (after `limit`)"""
    source_size: int
    """records in the split before `limit`"""
    limit: int | None = None
    revision: str | None = None
    kind: str = "datasets"
    """synthetic | jsonl | datasets"""
    columns: dict = field(default_factory=dict)
    sample_seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class VQADataset(Sequence):
    """Records of one split (after `limit`), loaded on access."""

    def __init__(self, get, indices: list[int], info: DatasetInfo):
        self._get, self._indices, self.info = get, indices, info

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self._get(self._indices[i])


# ------------------------------------------------------------------------------------------ helpers


def parse_columns(text: str | None) -> dict[str, str]:
    """`question=query,answers=labels` -> {"question": "query", "answers": "labels"}."""
    out = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise InputError(f"columns: '{part}' is not FIELD=COLUMN (fields: {', '.join(FIELDS)})")
        if key not in FIELDS:
            raise InputError(f"columns: unknown field '{key}' (fields: {', '.join(FIELDS)})")
        out[key] = value
    return out


def _resolve_columns(found: list[str], mapping: dict[str, str], source: str) -> dict[str, str]:
    columns = {}
    for f in FIELDS:
        if f in mapping:
            if mapping[f] not in found:
                raise InputError(f"columns: '{mapping[f]}' (for {f}) is not a column of {source} "
                                 f"(found: {', '.join(found)})")
            columns[f] = mapping[f]
        else:
            hit = next((a for a in ALIASES[f] if a in found), None)
            if hit:
                columns[f] = hit
    missing = [f for f in REQUIRED if f not in columns]
    if missing:
        hint = ",".join(f"{m}=<column>" for m in missing)
        raise InputError(f"dataset: {source} lacks the columns {', '.join(missing)} (expected {', '.join(REQUIRED)}"
                         f" and optionally question_id, answer_type, question_type; found: {', '.join(found)}); "
                         f"map them with --columns {hint}")
    return columns


def _answers(value, qid) -> list[str]:
    """Human answers in any published layout: list of str, list of {"answer"}, {"answer": [...]}, or a str."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = value.get("answer", [])
    out = []
    for a in value or []:
        if isinstance(a, dict):
            a = a.get("answer")
        if a is not None:
            out.append(str(a))
    return out


def _subset(size: int, limit: int | None, sample_seed: int) -> list[int]:
    if limit is None or limit >= size:
        return list(range(size))
    return sorted(random.Random(sample_seed).sample(range(size), limit))


def _open_image(value, image_dir: Path | None, qid):
    """A PIL RGB image from a PIL image, {"bytes", "path"} or a path (relative to image_dir)."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        if hasattr(value, "convert"):
            return value.convert("RGB")
        if isinstance(value, dict):
            if value.get("bytes"):
                return Image.open(io.BytesIO(value["bytes"])).convert("RGB")
            value = value.get("path")
        if isinstance(value, str) and value:
            path = Path(value)
            if not path.is_absolute() and image_dir is not None:
                path = image_dir / path
            return Image.open(path).convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise InputError(f"image: cannot read the image of question {qid} ({reason}: {value if isinstance(value, str) else 'embedded bytes'})") from None
    raise InputError(f"image: question {qid} has no image (value {type(value).__name__})")


def _check_image(value, image_dir: Path | None, qid) -> None:
    """Cheap readability check (header parse, no full decode)."""
    import io

    from PIL import Image, UnidentifiedImageError

    if hasattr(value, "convert"):
        return
    path = "embedded bytes"
    try:
        if isinstance(value, dict) and value.get("bytes"):
            Image.open(io.BytesIO(value["bytes"])).verify()
            return
        path = value.get("path") if isinstance(value, dict) else value
        if isinstance(path, str) and path:
            p = Path(path)
            if not p.is_absolute() and image_dir is not None:
                p = image_dir / p
            with Image.open(p) as im:
                im.verify()
            return
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not an image"
        raise InputError(f"image: cannot read the image of question {qid} ({reason}: {path})") from None
    raise InputError(f"image: question {qid} has no image")


def _record(row: dict, columns: dict, index: int, split: str, image_dir: Path | None, image) -> VQARecord:
    qid = row[columns["question_id"]] if "question_id" in columns else f"{split}-{index}"
    return VQARecord(
        question_id=qid,
        image=image,
        question=str(row[columns["question"]]),
        answers=_answers(row[columns["answers"]], qid),
        answer_type=row.get(columns.get("answer_type")) if "answer_type" in columns else None,
        question_type=row.get(columns.get("question_type")) if "question_type" in columns else None,
    )


def _validate_rows(rows, columns, split, image_dir, source, check_images: int) -> None:
    """Every selected record has a question and answers; the first `check_images` images open."""
    seen, unanswered = set(), 0
    for n, (index, row) in enumerate(rows):
        qid = row[columns["question_id"]] if "question_id" in columns else f"{split}-{index}"
        if qid in seen:
            raise InputError(f"dataset: question_id {qid} appears twice in {source}")
        seen.add(qid)
        if not _answers(row[columns["answers"]], qid):
            unanswered += 1
        if not str(row[columns["question"]] or "").strip():
            raise InputError(f"dataset: question {qid} in {source} has an empty question")
        if n < check_images:
            _check_image(row[columns["image"]], image_dir, qid)
    if unanswered:
        raise InputError(f"dataset: {unanswered} of {len(seen)} records in {source} have no answers "
                         f"(unanswered splits such as VQAv2 test/test-dev cannot be trained or scored; use train or validation)")


# ------------------------------------------------------------------------------------------ sources


def _synthetic(spec: str, split: str, limit, sample_seed) -> VQADataset:
    from toolkit.data.synthetic import FAMILIES, SPLITS, SyntheticShapes

    name, _, query = spec[len("synthetic:"):].partition("?")
    if name != "shapes":
        raise InputError(f"dataset: unknown synthetic dataset '{name}' (available: synthetic:shapes)")
    if split not in SPLITS:
        raise InputError(f"split: '{split}' is not a split of synthetic:shapes (splits: {', '.join(SPLITS)})")
    opts = {"n": 2000, "seed": 0, "types": FAMILIES}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in ("n", "seed"):
            try:
                opts[key] = int(value)
            except ValueError:
                raise InputError(f"dataset: synthetic option {key} must be an integer, got '{value}'") from None
            if key == "n" and opts[key] < 1:
                raise InputError(f"dataset: synthetic option n must be >= 1, got {opts[key]}")
        elif key == "types":
            types = tuple(t.strip() for t in value.split(",") if t.strip())
            bad = [t for t in types if t not in FAMILIES]
            if bad or not types:
                raise InputError(f"dataset: synthetic types must be among {', '.join(FAMILIES)}, got '{value}'")
            opts["types"] = types
        else:
            raise InputError(f"dataset: unknown synthetic option '{key}' (options: n, seed, types)")
    gen = SyntheticShapes(n=opts["n"], seed=opts["seed"], split=split, types=opts["types"])

    def get(i):
        r = gen.record(i)
        return VQARecord(r["question_id"], r["image"], r["question"], r["answers"], r["answer_type"], r["question_type"])

    indices = _subset(len(gen), limit, sample_seed)
    info = DatasetInfo(id=spec, split=split, size=len(indices), source_size=len(gen), limit=limit, kind="synthetic",
                       sample_seed=sample_seed)
    return VQADataset(get, indices, info)


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    try:
        # records end at "\n" only: str.splitlines() would also split at U+2028, valid inside a JSON string
        lines = path.read_text(encoding="utf-8").split("\n")
    except OSError as exc:
        raise InputError(f"dataset: cannot read '{path}' ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"dataset: '{path}' is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"dataset: line {n} of '{path}' is not JSON") from None
        if not isinstance(row, dict):
            raise InputError(f"dataset: line {n} of '{path}' is not a JSON object")
        rows.append(row)
    return rows


def _jsonl(path: Path, split, limit, sample_seed, columns, image_dir) -> VQADataset:
    rows = _read_jsonl(path)
    source = f"'{path}'"
    if not rows:
        raise InputError(f"dataset: {source} is empty (no records)")
    found = sorted({k for r in rows for k in r})
    cols = _resolve_columns(found, columns, source)
    for n, r in enumerate(rows, 1):
        absent = [f for f in REQUIRED if cols[f] not in r]
        if absent:
            raise InputError(f"dataset: record {n} of {source} lacks {', '.join(cols[f] for f in absent)}")
    indices = _subset(len(rows), limit, sample_seed)
    image_dir = Path(image_dir) if image_dir else path.parent
    _validate_rows(((i, rows[i]) for i in indices), cols, split, image_dir, source, check_images=len(indices))

    def get(i):
        row = rows[i]
        rec = _record(row, cols, i, split, image_dir, None)
        rec.image = _open_image(row[cols["image"]], image_dir, rec.question_id)
        return rec

    info = DatasetInfo(id=str(path), split=split, size=len(indices), source_size=len(rows), limit=limit, kind="jsonl",
                       columns=cols, sample_seed=sample_seed)
    return VQADataset(get, indices, info)


def _hf(spec: str, split, limit, sample_seed, columns, image_dir, revision, config) -> VQADataset:
    import datasets

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    path = Path(spec)
    try:
        if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise InputError(f"split: '{split}' is not a split of '{spec}' (splits: {', '.join(loaded)})")
                loaded = loaded[split]
            ds = loaded
        else:
            if not path.exists():
                from toolkit.calculator.structure import _hub_reachable

                if not _hub_reachable():
                    raise InputError(f"dataset: '{spec}' is not a local file or folder and the Hugging Face Hub is "
                                     f"unreachable (offline); use synthetic:shapes, a local JSONL file, or a saved dataset folder")
            ds = datasets.load_dataset(spec, config, split=split, revision=revision)
    except InputError:
        raise
    except ValueError as exc:
        msg = str(exc).splitlines()[0]
        if "split" in msg.lower():
            raise InputError(f"split: '{split}' is not available in '{spec}' ({msg})") from None
        raise InputError(f"dataset: cannot load '{spec}' ({msg})") from None
    except (FileNotFoundError, OSError, datasets.exceptions.DatasetNotFoundError) as exc:
        raise InputError(f"dataset: cannot load '{spec}' ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    source = f"'{spec}' (split {split})"
    if len(ds) == 0:
        raise InputError(f"dataset: {source} is empty (no records)")
    cols = _resolve_columns(list(ds.column_names), columns, source)
    indices = _subset(len(ds), limit, sample_seed)
    raw = ds
    image_feature = ds.features.get(cols["image"])
    if isinstance(image_feature, datasets.Image) and image_feature.decode:
        raw = ds.cast_column(cols["image"], datasets.Image(decode=False))  # validate bytes without decoding
    image_dir = Path(image_dir) if image_dir else (path if path.is_dir() else None)
    _validate_rows(((i, raw[i]) for i in indices), cols, split, image_dir, source, check_images=VERIFY_LIMIT)

    def get(i):
        row = raw[i]
        rec = _record(row, cols, i, split, image_dir, None)
        rec.image = _open_image(row[cols["image"]], image_dir, rec.question_id)
        return rec

    revision_seen = revision or getattr(ds.info, "version", None)
    info = DatasetInfo(id=spec, split=split, size=len(indices), source_size=len(ds), limit=limit, kind="datasets",
                       revision=str(revision_seen) if revision_seen else None, columns=cols, sample_seed=sample_seed)
    return VQADataset(get, indices, info)


def load_vqa(spec: str, *, split: str = "train", limit: int | None = None, columns: dict | None = None,
             image_dir: str | None = None, revision: str | None = None, config: str | None = None,
             sample_seed: int = 0) -> VQADataset:
    """Load and validate a VQA split (see the module docstring for the accepted sources)."""
    spec = (spec or "").strip()
    if not spec:
        raise InputError("dataset: required (synthetic:shapes, a JSONL file, a dataset folder, or a Hub dataset id)")
    if limit is not None and limit < 1:
        raise InputError(f"limit: must be a positive number of records, got {limit}")
    columns = columns or {}
    if spec.startswith("synthetic:"):
        return _synthetic(spec, split, limit, sample_seed)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".jsonl":
        return _jsonl(path, split, limit, sample_seed, columns, image_dir)
    if path.is_dir() and (path / f"{split}.jsonl").is_file():
        return _jsonl(path / f"{split}.jsonl", split, limit, sample_seed, columns, image_dir or path)
    if path.is_file():
        raise InputError(f"dataset: '{spec}' is a file but not .jsonl (give a JSONL file, a dataset folder or a Hub id)")
    return _hf(str(path) if path.exists() else spec, split, limit, sample_seed, columns, image_dir, revision, config)
