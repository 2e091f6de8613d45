"""Data hygiene: what an adapter trained on, whether an evaluation overlaps it, and an image-grouped hold-out.

Training records what it saw; evaluation checks that it does not score on it:

    >>> from toolkit.data.sources import load_vqa
    >>> train = load_vqa("synthetic:shapes?n=2000", split="validation", limit=20)
    >>> seen = trained_on(train)                      # written next to the adapter: seen.to_json()
    >>> evaluation = load_vqa("synthetic:shapes?n=2000", split="validation", limit=40)
    >>> found = overlap(seen, evaluation.identities())
    >>> found.questions, found.eval_questions         # `limit` subsets of one seed are nested
    (20, 40)
    >>> check_clean(found, allow_contaminated=True).split(" (e.g.")[0]  # False: raises InputError
    'contaminated: 20 of 40 questions (and 20 of 40 images) were trained on by this adapter'

A study that trains and evaluates on one split holds out a fraction of its *images* (`load_vqa(...,
holdout=0.1, part="train" | "holdout")`): an image's side is a pure function of its id
(`holdout_fraction_of`), so both parts share no image, hence no question, whatever `limit` or `sample_seed`.

Identities are (question_id, image_id) pairs from `VQADataset.identities()` (no image is decoded). Question ids
are compared as strings; an evaluation question counts as trained on when its id was trained on *and* (where
both sides know it) so was its image, so two JSONL files that both number their questions from 0 do not collide.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import InputError

PARTS = ("train", "holdout")
"""The two sides of a hold-out: `load_vqa(..., part=...)`."""
EXAMPLES = 5
"""Example ids an `Overlap` keeps for the message and the results."""
FORMAT = "cmba-trained-on/1"


def holdout_fraction_of(image_id: str) -> float:
    """A deterministic number in [0, 1) for an image id (sha256), so an image always falls on the same side.

        >>> holdout_fraction_of("synthetic:shapes?seed=0/train/7") == holdout_fraction_of("synthetic:shapes?seed=0/train/7")
        True
    """
    digest = hashlib.sha256(str(image_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_part(image_id: str, *, holdout: float, part: str) -> bool:
    """Whether an image belongs to `part` ("train": fraction >= holdout, "holdout": fraction < holdout)."""
    if part not in PARTS:
        raise InputError(f"part: must be one of {', '.join(PARTS)}, got {part!r}")
    held = holdout_fraction_of(image_id) < holdout
    return held if part == "holdout" else not held


def check_holdout(holdout, part: str) -> float | None:
    """Validate `load_vqa`'s holdout/part pair; the fraction as a float (None: no hold-out)."""
    if holdout is not None and (isinstance(holdout, bool) or not isinstance(holdout, (int, float))
                                or not 0 < holdout < 1):
        raise InputError(f"holdout: must be a fraction of the images between 0 and 1 (exclusive), got {holdout!r}")
    if part not in PARTS:
        raise InputError(f"part: must be one of {', '.join(PARTS)}, got {part!r}")
    if part == "holdout" and holdout is None:
        raise InputError("part: 'holdout' needs a holdout fraction (holdout, e.g. 0.1)")
    return float(holdout) if holdout is not None else None


def select_part(identities: list[tuple], *, holdout: float, part: str, source: str = "the dataset") -> list[int]:
    """Positions of the records whose image lies in `part` (a record without an image id is its own group)."""
    kept = [n for n, (qid, image_id) in enumerate(identities)
            if in_part(image_id if image_id is not None else f"question:{qid}", holdout=holdout, part=part)]
    if not kept:
        raise InputError(f"holdout: the {part} part of {source} with holdout {holdout} is empty "
                         f"({len(identities)} records); use a {'larger' if part == 'holdout' else 'smaller'} holdout")
    return kept


def _path_id(path: str, image_dir: Path | None, root: Path | None) -> str:
    full = Path(os.path.normpath(os.path.abspath(Path(image_dir or ".") / path)))
    if root is not None:
        base = Path(os.path.normpath(os.path.abspath(root)))
        if full == base or base in full.parents:
            return full.relative_to(base).as_posix()
    return full.as_posix()


def image_id_of(value, *, image_dir: Path | None = None, root: Path | None = None) -> str | None:
    """What identifies an image value without decoding it.

    A path (a str, or the "path" of `datasets`' {"bytes", "path"}) resolved against `image_dir`, normalised and
    made relative to the dataset folder `root` where it lies under it; else "sha1:" of the raw bytes; else, for
    an already decoded PIL image, "sha1:" of its pixels. None when the value holds no image.

        >>> image_id_of("./img/../img/0.png", image_dir=Path("/data"), root=Path("/data"))
        'img/0.png'
    """
    if isinstance(value, dict):
        if value.get("path"):
            return _path_id(value["path"], image_dir, root)
        if value.get("bytes"):
            return "sha1:" + hashlib.sha1(value["bytes"]).hexdigest()
        return None
    if isinstance(value, str) and value:
        return _path_id(value, image_dir, root)
    if hasattr(value, "tobytes"):  # an already decoded PIL image
        return "sha1:" + hashlib.sha1(f"{value.mode}{value.size}".encode() + value.tobytes()).hexdigest()
    return None


def _digest(question_ids: Iterable[str], image_ids: Iterable[str]) -> str:
    h = hashlib.sha256()
    for qid in sorted(question_ids):
        h.update(b"q\0" + qid.encode() + b"\n")
    for image_id in sorted(image_ids):
        h.update(b"i\0" + image_id.encode() + b"\n")
    return h.hexdigest()


@dataclass(frozen=True)
class TrainedOn:
    """The questions and images a run trained on (sorted, distinct), and a digest of them.

        >>> TrainedOn(question_ids=("q1",), image_ids=("img/1.png",)).summary()["questions"]
        1
    """

    question_ids: tuple[str, ...]
    """question ids as strings"""
    image_ids: tuple[str, ...] = ()
    """image ids (records whose source gives none add nothing)"""
    pairs: tuple[tuple[str, str], ...] = ()
    """(question_id, image_id) of every record that has both: a question is trained on with its image"""
    digest: str = field(default="", compare=False)
    """sha256 over the sorted ids; computed when empty, checked when given"""

    def __post_init__(self):
        for name in ("question_ids", "image_ids"):
            values = getattr(self, name)
            if isinstance(values, str) or not all(isinstance(v, str) for v in values):
                raise InputError(f"{name}: must be a list of strings")
            object.__setattr__(self, name, tuple(sorted(set(values))))
        if not all(isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, str) for v in p)
                   for p in self.pairs):
            raise InputError("pairs: must be a list of [question_id, image_id] strings")
        object.__setattr__(self, "pairs", tuple(sorted({tuple(p) for p in self.pairs})))
        expected = _digest(self.question_ids, self.image_ids)
        if self.digest and self.digest != expected:
            raise InputError(f"digest: {self.digest} does not match the recorded ids (expected {expected}); "
                             f"the trained-on list was altered")
        object.__setattr__(self, "digest", expected)

    def summary(self) -> dict:
        """What cmba.json needs: counts and the digest (the ids themselves go in their own file)."""
        return {"questions": len(self.question_ids), "images": len(self.image_ids), "digest": self.digest}

    def to_json(self) -> str:
        """The whole record as JSON text (one file next to the adapter)."""
        return json.dumps({"format": FORMAT, **self.summary(), "question_ids": list(self.question_ids),
                           "image_ids": list(self.image_ids), "pairs": [list(p) for p in self.pairs]})

    @classmethod
    def from_json(cls, text: str) -> TrainedOn:
        """Read `to_json()`'s text back; a damaged or foreign file is a one-line InputError."""
        try:
            doc = json.loads(text)
        except (TypeError, json.JSONDecodeError):
            raise InputError("trained_on: not JSON (expected the file TrainedOn.to_json() wrote)") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise InputError(f"trained_on: not a {FORMAT} record")
        return cls(question_ids=tuple(doc.get("question_ids") or ()), image_ids=tuple(doc.get("image_ids") or ()),
                   pairs=tuple(tuple(p) if isinstance(p, list) else p for p in doc.get("pairs") or ()),
                   digest=str(doc.get("digest") or ""))


def trained_on(dataset) -> TrainedOn:
    """What a run on `dataset` (a `VQADataset`) trains on, read without decoding any image."""
    ids = dataset.identities()
    return TrainedOn(question_ids=tuple(q for q, _ in ids), image_ids=tuple(i for _, i in ids if i is not None),
                     pairs=tuple((q, i) for q, i in ids if i is not None))


@dataclass(frozen=True)
class Overlap:
    """How much of an evaluation was trained on: distinct questions and images, and a few example ids."""

    eval_questions: int
    """distinct evaluation questions"""
    eval_images: int
    """distinct evaluation images (with an id)"""
    questions: int
    """evaluation questions that were trained on"""
    images: int
    """evaluation images that were trained on (with any question)"""
    example_questions: tuple[str, ...] = ()
    example_images: tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("eval_questions", "eval_images", "questions", "images"):
            if getattr(self, name) < 0:
                raise InputError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.questions > self.eval_questions or self.images > self.eval_images:
            raise InputError("overlap: more overlapping than evaluated questions or images")

    @property
    def question_fraction(self) -> float:
        return self.questions / self.eval_questions if self.eval_questions else 0.0

    @property
    def image_fraction(self) -> float:
        return self.images / self.eval_images if self.eval_images else 0.0

    @property
    def contaminated(self) -> bool:
        return bool(self.questions or self.images)

    def to_dict(self) -> dict:
        """For evaluation results: counts, fractions, examples."""
        return {"contaminated": self.contaminated, "questions": self.questions, "eval_questions": self.eval_questions,
                "question_fraction": self.question_fraction, "images": self.images, "eval_images": self.eval_images,
                "image_fraction": self.image_fraction, "example_questions": list(self.example_questions),
                "example_images": list(self.example_images)}


def overlap(trained: TrainedOn, eval_identities: Iterable[tuple]) -> Overlap:
    """Count the evaluation's questions and images that `trained` saw (identities: (question_id, image_id))."""
    seen_q, seen_i, seen_pairs = set(trained.question_ids), set(trained.image_ids), set(trained.pairs)
    paired_q = {q for q, _ in trained.pairs}  # questions whose trained image is known
    questions, images, hit_q, hit_i = set(), set(), [], []
    for qid, image_id in eval_identities:
        qid = str(qid)
        if qid in questions:
            continue
        questions.add(qid)
        if image_id is not None and image_id not in images:
            images.add(image_id)
            if image_id in seen_i:
                hit_i.append(image_id)
        if qid in seen_q and (image_id is None or qid not in paired_q or (qid, image_id) in seen_pairs):
            hit_q.append(qid)
    return Overlap(eval_questions=len(questions), eval_images=len(images), questions=len(hit_q), images=len(hit_i),
                   example_questions=tuple(hit_q[:EXAMPLES]), example_images=tuple(hit_i[:EXAMPLES]))


def check_clean(overlap: Overlap, *, allow_contaminated: bool) -> str | None:
    """None for a clean evaluation; else raise a one-line InputError, or return a "contaminated" note if allowed.

        >>> check_clean(Overlap(eval_questions=400, eval_images=400, questions=0, images=0), allow_contaminated=False)
    """
    if not overlap.contaminated:
        return None
    what = (f"{overlap.questions} of {overlap.eval_questions} questions "
            f"(and {overlap.images} of {overlap.eval_images} images) were trained on by this adapter")
    examples = ", ".join((overlap.example_questions or overlap.example_images)[:3])
    if allow_contaminated:
        return f"contaminated: {what} (e.g. {examples})"
    raise InputError(f"evaluation: {what} (e.g. {examples}); evaluate on another split, use --holdout, "
                     f"or pass --allow-contaminated to mark the result contaminated")
