"""VQA data from three kinds of source, as one sequence of `VQARecord`s.

    >>> ds = load_vqa("synthetic:shapes?n=2000&seed=0", split="train")
    >>> ds = load_vqa("lmms-lab/VQAv2", split="validation", holdout=0.1)     # Hub id (online, or its cache offline)
    >>> ds = load_vqa("/data/VQAv2", split="validation", limit=500)           # downloaded: data/<split>-*.parquet
    >>> ds = load_vqa("/data/my_vqa.jsonl", image_dir="/data/images")         # JSONL + image folder
    >>> ds[0].question, ds[0].answers, ds.info.to_dict()

A record has `question_id`, `image`, `question`, `answers` (1-10 human answers), and optionally
`answer_type` and `question_type` (DESIGN.md, Data). Column names are found automatically for the usual
layouts (VQAv2 copies such as lmms-lab/VQAv2 keep `answers` as a list of `{"answer", "answer_confidence",
"answer_id"}`, saved copies of HuggingFaceM4/VQAv2 as a `Sequence` of them); anything else is mapped with
`columns`, e.g. `{"question": "query", "answers": "labels"}` (CLI: `--columns question=query,answers=labels`).
`datasets` sources are opened by toolkit.data.hf_datasets (a missing split, a loading script, the Hub offline).

`limit` takes a deterministic subset: `sample_seed` (not the training seed) picks which records, so every run
of a sweep trains and evaluates on the same questions. `holdout=0.1` splits one split by image before `limit`
(`part="train"` keeps about 90 % of the images, `part="holdout"` the other 10 %; toolkit.data.hygiene), so a
study can train and evaluate on one split without sharing an image. lmms-lab/VQAv2 has validation, testdev and
test, no train, and its test splits withhold their answers: train and evaluate on parts of validation.

Every record also has an `image_id` that names its image without decoding it (synthetic: the scene; JSONL: the
image's path relative to the dataset folder; `datasets`: the `image_id` column, else the image's path, else a
sha1 of its bytes), and `ds.identities()` lists (question_id, image_id) of the selected records cheaply, for
the hygiene checks (an adapter records what it trained on; evaluation refuses to overlap it).

Sources are validated before anything is trained: missing columns, an empty dataset, a split without any answers
(VQAv2's test and test-dev), records without answers and unreadable images are one-line errors (toolkit.data.rows).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

from toolkit.data.hygiene import check_holdout, select_part
from toolkit.data.rows import (
    FIELDS,
    REQUIRED,
    answers_of,
    image_id_in,
    open_image,
    parse_columns,
    question_id_of,
    resolve_columns,
    validate_rows,
)
from toolkit.errors import InputError

__all__ = ["FIELDS", "DatasetInfo", "VQADataset", "VQARecord", "load_vqa", "parse_columns"]

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
    image_id: str | None = None
    """what identifies the image without decoding it (two questions on one image share it; see the module doc)"""

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
    """records in the split before `holdout` and `limit`"""
    limit: int | None = None
    revision: str | None = None
    kind: str = "datasets"
    """synthetic | jsonl | datasets"""
    columns: dict = field(default_factory=dict)
    sample_seed: int = 0
    holdout: float | None = None
    """fraction of the split's images held out (None: the whole split)"""
    part: str | None = None
    """with `holdout`: "train" (images at or above the fraction) or "holdout" (below it)"""

    def to_dict(self) -> dict:
        return asdict(self)


class VQADataset(Sequence):
    """Records of one split (after `holdout` and `limit`), loaded on access.

    `get(i)` builds source record i (decoding its image); `ids(indices)` gives (question_id, image_id) of source
    records without decoding any image.
    """

    def __init__(self, get, indices: list[int], info: DatasetInfo, ids=None, texts=None):
        self._get, self._indices, self.info = get, indices, info
        self._ids = ids or (lambda indices: [(str(r.question_id), r.image_id) for r in map(get, indices)])
        self._texts = texts or (lambda indices: [(r.question, r.answer) for r in map(get, indices)])

    def texts(self) -> list[tuple[str, str]]:
        """(question, training answer) of every selected record, in order; `datasets` sources decode no image
        (the lengths that length-grouped batches sort by, toolkit.training.order)."""
        return self._texts(self._indices)

    def identities(self) -> list[tuple[str, str | None]]:
        """(question_id as str, image_id) of every selected record, in order, without decoding images.

            >>> load_vqa("synthetic:shapes?n=3").identities()[0]
            ('shapes-0-train-0', 'synthetic:shapes?seed=0/train/0')
        """
        return self._ids(self._indices)

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self._get(self._indices[i])


# ------------------------------------------------------------------------------------------ helpers


def _select(size: int, ids, *, limit: int | None, sample_seed: int, holdout: float | None, part: str,
            source: str) -> list[int]:
    """Source indices kept: the `part` of the image-grouped hold-out (when `holdout`), then `limit` of those."""
    pool = range(size) if holdout is None else select_part(ids(list(range(size))), holdout=holdout, part=part,
                                                           source=source)
    if limit is None or limit >= len(pool):
        return list(pool)
    return sorted(random.Random(sample_seed).sample(pool, limit))


def _record(row: dict, columns: dict, index: int, split: str, image_dir: Path | None, image) -> VQARecord:
    qid = question_id_of(row, columns, index, split)
    return VQARecord(
        question_id=qid,
        image=image,
        question=str(row[columns["question"]]),
        answers=answers_of(row[columns["answers"]], qid),
        answer_type=row.get(columns.get("answer_type")) if "answer_type" in columns else None,
        question_type=row.get(columns.get("question_type")) if "question_type" in columns else None,
    )


def _refuse_unanswered(answers, source: str, split: str, splits=()) -> None:
    """Refuse, in one line, a split none of whose selected records has an answer (VQAv2's test and test-dev withhold
    theirs): it can be neither trained on nor scored. `answers` is consumed up to the first record that has one;
    a split where only some records lack answers is refused by toolkit.data.rows.validate_rows."""
    from toolkit.data.hf_datasets import answered_hint

    n = 0
    for value in answers:
        try:
            if answers_of(value, None):
                return
        except InputError:  # a malformed value: validate_rows names its question
            return
        n += 1
    if n:
        raise InputError(f"split: '{split}' of {source} has no answers in any of its {n:,} records (withheld, as in "
                         f"VQAv2's test and test-dev, which only the EvalAI server scores), so it can be neither "
                         f"trained on nor scored; {answered_hint(split, splits)}")


def _rows_in_chunks(table, cols: dict, indices: list[int], *, images: int):
    """(index, row) of a `datasets.Dataset` read 1,000 rows at a time; rows after the first `images` leave the image
    column out (validate_rows checks only that many images, and VQAv2's embedded images are most of its bytes)."""
    light = table.select_columns(sorted({cols[f] for f in ("question_id", "question", "answers") if f in cols}))
    for start in range(0, len(indices), 1000):
        chunk = indices[start:start + 1000]
        batch = (table if start < images else light)[chunk]
        for n, i in enumerate(chunk):
            yield i, {c: batch[c][n] for c in batch}


# ------------------------------------------------------------------------------------------ sources


MAX_SYNTHETIC = 10_000_000
"""largest synthetic:shapes size (its index of questions is built in memory)"""


def _synthetic(spec: str, split: str, limit, sample_seed, holdout, part) -> VQADataset:
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
            if key == "n" and not 1 <= opts[key] <= MAX_SYNTHETIC:
                raise InputError(f"dataset: synthetic option n must be in [1, {MAX_SYNTHETIC:,}], got {opts[key]}")
            if key == "seed" and not 0 <= opts[key] < 2**32:
                raise InputError(f"dataset: synthetic option seed must be in [0, 2^32), got {opts[key]}")
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
        return VQARecord(r["question_id"], r["image"], r["question"], r["answers"], r["answer_type"], r["question_type"],
                         r["image_id"])

    def ids(indices):
        return [(gen.question_id(i), gen.image_id(i)) for i in indices]

    indices = _select(len(gen), ids, limit=limit, sample_seed=sample_seed, holdout=holdout, part=part, source=spec)
    info = DatasetInfo(id=spec, split=split, size=len(indices), source_size=len(gen), limit=limit, kind="synthetic",
                       sample_seed=sample_seed, **_part_info(holdout, part))
    return VQADataset(get, indices, info, ids)


def _part_info(holdout, part) -> dict:
    return {"holdout": holdout, "part": part} if holdout is not None else {}


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


def _getter(rows, cols: dict, split: str, image_dir, root, anywhere: bool = False):
    """record(i) of an indexable source of rows (a JSONL list, a `datasets.Dataset`), image opened on access."""
    def get(i):
        row = rows[i]
        rec = _record(row, cols, i, split, image_dir, None)
        rec.image = open_image(row[cols["image"]], image_dir, rec.question_id, anywhere=anywhere)
        rec.image_id = image_id_in(row, cols, image_dir, root)
        return rec

    return get


def _jsonl(path: Path, split, limit, sample_seed, columns, image_dir, holdout, part, anywhere) -> VQADataset:
    rows = _read_jsonl(path)
    source = f"'{path}'"
    if not rows:
        raise InputError(f"dataset: {source} is empty (no records)")
    found = sorted({k for r in rows for k in r})
    cols = resolve_columns(found, columns, source)
    for n, r in enumerate(rows, 1):
        absent = [f for f in REQUIRED if cols[f] not in r]
        if absent:
            raise InputError(f"dataset: record {n} of {source} lacks {', '.join(cols[f] for f in absent)}")
    image_dir = Path(image_dir) if image_dir else path.parent
    root = path.parent

    def ids(indices):
        return [(str(question_id_of(rows[i], cols, i, split)), image_id_in(rows[i], cols, image_dir, root)) for i in indices]

    indices = _select(len(rows), ids, limit=limit, sample_seed=sample_seed, holdout=holdout, part=part, source=source)
    _refuse_unanswered((rows[i][cols["answers"]] for i in indices), source, split)
    validate_rows(((i, rows[i]) for i in indices), cols, split, image_dir, source, check_images=len(indices),
                  anywhere=anywhere)

    get = _getter(rows, cols, split, image_dir, root, anywhere)

    info = DatasetInfo(id=str(path), split=split, size=len(indices), source_size=len(rows), limit=limit, kind="jsonl",
                       columns=cols, sample_seed=sample_seed, **_part_info(holdout, part))
    return VQADataset(get, indices, info, ids)


def _hf(spec: str, split, limit, sample_seed, columns, image_dir, revision, config, holdout, part,
        anywhere) -> VQADataset:
    import datasets

    from toolkit.data.hf_datasets import open_split

    path = Path(spec)
    opened = open_split(spec, split=split, config=config, revision=revision)
    ds = opened.dataset
    source = f"'{spec}' (split {split})"
    if len(ds) == 0:
        raise InputError(f"dataset: {source} is empty (no records)")
    cols = resolve_columns(list(ds.column_names), columns, source)
    raw = ds
    image_feature = ds.features.get(cols["image"])
    if isinstance(image_feature, datasets.Image) and image_feature.decode:
        raw = ds.cast_column(cols["image"], datasets.Image(decode=False))  # validate bytes without decoding
    image_dir = Path(image_dir) if image_dir else (path if path.is_dir() else None)
    root = path if path.is_dir() else None
    # the identity columns alone: an image column that holds the image itself is read only when there is no
    # image_id column (then its path, else its bytes' sha1)
    id_cols = [cols[f] for f in ("question_id", "image_id") if f in cols]
    id_view = raw.select_columns(id_cols + ([cols["image"]] if "image_id" not in cols else []))

    def ids(indices):
        out = []
        for start in range(0, len(indices), 1000):
            chunk = indices[start:start + 1000]
            batch = id_view[chunk]
            for n, i in enumerate(chunk):
                row = {c: batch[c][n] for c in batch}
                out.append((str(question_id_of(row, cols, i, split)), image_id_in(row, cols, image_dir, root)))
        return out

    indices = _select(len(ds), ids, limit=limit, sample_seed=sample_seed, holdout=holdout, part=part, source=source)
    answer_view = raw.select_columns([cols["answers"]])
    _refuse_unanswered((v for start in range(0, len(indices), 1000)
                        for v in answer_view[indices[start:start + 1000]][cols["answers"]]),
                       spec if not path.exists() else f"'{spec}'", split, opened.splits)
    validate_rows(_rows_in_chunks(raw, cols, indices, images=VERIFY_LIMIT), cols, split, image_dir, source,
                  check_images=VERIFY_LIMIT, anywhere=anywhere)

    get = _getter(raw, cols, split, image_dir, root, anywhere)
    text_view = raw.select_columns([cols["question"], cols["answers"]])

    def texts(indices):
        out = []
        for start in range(0, len(indices), 1000):
            batch = text_view[indices[start:start + 1000]]
            for q, a in zip(batch[cols["question"]], batch[cols["answers"]], strict=True):
                out.append((str(q), VQARecord(None, None, str(q), answers_of(a, None)).answer))
        return out

    info = DatasetInfo(id=spec, split=split, size=len(indices), source_size=len(ds), limit=limit, kind="datasets",
                       revision=opened.revision, columns=cols, sample_seed=sample_seed,
                       **_part_info(holdout, part))
    return VQADataset(get, indices, info, ids, texts)


def load_vqa(spec: str, *, split: str = "train", limit: int | None = None, columns: dict | None = None,
             image_dir: str | None = None, revision: str | None = None, config: str | None = None,
             sample_seed: int = 0, holdout: float | None = None, part: str = "train",
             images_anywhere: bool = False) -> VQADataset:
    """Load and validate a VQA split (see the module docstring for the accepted sources).

    Image paths must stay inside the dataset folder (`image_dir`, else the JSONL's folder) unless
    `images_anywhere`: a `../` or absolute path in a shared dataset file must not read the rest of the disk.

    `holdout` (a fraction in (0, 1)) groups the split by image and keeps one `part`: "train" (the images whose
    hash fraction is >= holdout) or "holdout" (the others), before `limit`; the two parts share no image:

        >>> train = load_vqa("synthetic:shapes?n=2000", split="train", holdout=0.1, limit=500)
        >>> held = load_vqa("synthetic:shapes?n=2000", split="train", holdout=0.1, part="holdout")
    """
    spec = (spec or "").strip()
    if not spec:
        raise InputError("dataset: required (synthetic:shapes, a JSONL file, a dataset folder, or a Hub dataset id)")
    if limit is not None and limit < 1:
        raise InputError(f"limit: must be a positive number of records, got {limit}")
    holdout = check_holdout(holdout, part)
    columns = columns or {}
    if spec.startswith("synthetic:"):
        return _synthetic(spec, split, limit, sample_seed, holdout, part)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".jsonl":
        return _jsonl(path, split, limit, sample_seed, columns, image_dir, holdout, part, images_anywhere)
    if path.is_dir() and (path / f"{split}.jsonl").is_file():
        return _jsonl(path / f"{split}.jsonl", split, limit, sample_seed, columns, image_dir or path, holdout, part,
                      images_anywhere)
    if path.is_file():
        raise InputError(f"dataset: '{spec}' is a file but not .jsonl (give a JSONL file, a dataset folder or a Hub id)")
    return _hf(str(path) if path.exists() else spec, split, limit, sample_seed, columns, image_dir, revision, config,
               holdout, part, images_anywhere)
