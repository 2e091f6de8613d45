"""How a source row becomes a VQA record: column names, answers, question and image ids, images.

Used by toolkit.data.sources for JSONL and `datasets` rows (a row is a dict keyed by the source's columns):

    >>> columns = resolve_columns(["qid", "img", "query", "labels"], {}, "'my.jsonl'")
    >>> columns
    {'question_id': 'qid', 'image': 'img', 'question': 'query', 'answers': 'labels'}
    >>> answers_of([{"answer": "yes"}, {"answer": "no"}], 1)
    ['yes', 'no']

Column names are found through `ALIASES` unless the user maps them (`parse_columns`, CLI `--columns`);
`validate_rows` turns missing answers, empty questions, repeated ids and unreadable images into one-line
errors; `open_image` decodes an image, `check_image` only parses its header, and `image_id_in` names it
without reading it at all (toolkit.data.hygiene).
"""

from __future__ import annotations

from pathlib import Path

from toolkit.data.hygiene import image_id_of
from toolkit.errors import InputError

FIELDS = ("question_id", "image", "question", "answers", "answer_type", "question_type", "image_id")
REQUIRED = ("image", "question", "answers")
ALIASES = {
    "question_id": ("question_id", "qid", "id"),
    "image": ("image", "img", "image_path", "file_name", "image_file", "picture"),
    "question": ("question", "query", "prompt"),
    "answers": ("answers", "answer", "multiple_choice_answer", "labels", "label"),
    "answer_type": ("answer_type",),
    "question_type": ("question_type",),
    "image_id": ("image_id",),
}

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


def resolve_columns(found: list[str], mapping: dict[str, str], source: str) -> dict[str, str]:
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


def answers_of(value, qid) -> list[str]:
    """Human answers in any published layout: list of str, list of {"answer"}, {"answer": [...]}, or a str."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = value.get("answer", [])
    if isinstance(value, str):
        return [value]
    if value is not None and not isinstance(value, list | tuple):
        raise InputError(f"answers: question {qid} has answers {value!r} (allowed: a text, a list of texts, "
                         f"or a list of {{\"answer\": text}})")
    out = []
    for a in value or []:
        if isinstance(a, dict):
            a = a.get("answer")
        if a is not None:
            out.append(str(a))
    return out


def image_id_in(row: dict, columns: dict, image_dir: Path | None, root: Path | None) -> str | None:
    """The dataset's own image id column when it has one, else what identifies the image value."""
    if "image_id" in columns and row.get(columns["image_id"]) is not None:
        return f"image_id:{row[columns['image_id']]}"
    return image_id_of(row.get(columns["image"]), image_dir=image_dir, root=root)


def question_id_of(row: dict, columns: dict, index: int, split: str):
    if "question_id" not in columns:
        return f"{split}-{index}"
    qid = row[columns["question_id"]]
    if not isinstance(qid, str | int) or isinstance(qid, bool):
        raise InputError(f"question_id: record {index + 1} has {type(qid).__name__} {str(qid)[:40]} "
                         f"(allowed: a text or a whole number)")
    return qid


def image_path(value: str, image_dir: Path | None, qid, *, anywhere: bool = False) -> Path:
    """Where an image path points; refused when it leaves `image_dir` (the dataset folder) through `..`, an
    absolute path or a symlink, unless `anywhere` (the user's explicit --images-anywhere)."""
    path = Path(value)
    if not path.is_absolute() and image_dir is not None:
        path = image_dir / path
    if anywhere or image_dir is None:
        return path
    try:
        path.resolve().relative_to(Path(image_dir).resolve())
    except ValueError:
        raise InputError(f"image: the image of question {qid} ('{value}') lies outside the dataset folder "
                         f"'{image_dir}' (allowed: paths inside it; --images-anywhere allows others)") from None
    return path


def open_image(value, image_dir: Path | None, qid, *, anywhere: bool = False):
    """A PIL RGB image from a PIL image, {"bytes", "path"} or a path (relative to image_dir, inside it)."""
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
            return Image.open(image_path(value, image_dir, qid, anywhere=anywhere)).convert("RGB")
    except InputError:  # a path outside the dataset folder: already one line (InputError is a ValueError)
        raise
    except Image.DecompressionBombError as exc:
        raise InputError(f"image: the image of question {qid} is too large ({str(exc).split(',')[0]})") from None
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise InputError(f"image: cannot read the image of question {qid} ({reason}: {value if isinstance(value, str) else 'embedded bytes'})") from None
    raise InputError(f"image: question {qid} has no image (value {type(value).__name__})")


def check_image(value, image_dir: Path | None, qid, *, anywhere: bool = False) -> None:
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
            with Image.open(image_path(path, image_dir, qid, anywhere=anywhere)) as im:
                im.verify()
            return
    except InputError:  # a path outside the dataset folder: already one line (InputError is a ValueError)
        raise
    except Image.DecompressionBombError as exc:
        raise InputError(f"image: the image of question {qid} is too large ({str(exc).split(',')[0]})") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not an image"
        raise InputError(f"image: cannot read the image of question {qid} ({reason}: {path})") from None
    raise InputError(f"image: question {qid} has no image")


def validate_rows(rows, columns, split, image_dir, source, check_images: int, *, anywhere: bool = False) -> None:
    """Every selected record has a question and answers; the first `check_images` images open."""
    seen, unanswered = set(), 0
    for n, (index, row) in enumerate(rows):
        qid = question_id_of(row, columns, index, split)
        if qid in seen:
            raise InputError(f"dataset: question_id {qid} appears twice in {source}")
        seen.add(qid)
        if not answers_of(row[columns["answers"]], qid):
            unanswered += 1
        if not str(row[columns["question"]] or "").strip():
            raise InputError(f"dataset: question {qid} in {source} has an empty question")
        if n < check_images:
            check_image(row[columns["image"]], image_dir, qid, anywhere=anywhere)
    if unanswered:
        raise InputError(f"dataset: {unanswered} of {len(seen)} records in {source} have no answers "
                         f"(unanswered splits such as VQAv2 test/test-dev cannot be trained or scored; use train or validation)")
