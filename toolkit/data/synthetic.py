"""A deterministic synthetic VQA dataset: coloured shapes on a 2x2 grid (`synthetic:shapes`).

    >>> ds = SyntheticShapes(n=2000, seed=0, split="train")
    >>> r = ds[0]; r.question, r.answers[:3], r.answer_type
    ('how many shapes are there?', ['3', '3', 'three'], 'number')

Each image is 64x64 with one to four shapes (circle, square, triangle) in red, green, blue or yellow, each in
its own cell of a 2x2 grid. Question families and their VQAv2 answer types:

| family     | example                                  | answer type |
|------------|------------------------------------------|-------------|
| `color`    | what color is the circle?                | other       |
| `shape`    | what shape is the red object?            | other       |
| `count`    | how many blue shapes are there?          | number      |
| `exist`    | is there a green triangle?               | yes/no      |
| `position` | where is the yellow square? / is the ... | other / yes/no |

Every question carries ten "human" answers like VQAv2: mostly the right answer, sometimes in another surface
form ("three" for "3", "top-left" for "top left"), sometimes a plausible mistake, so the official accuracy
(min(1, matches/3) over leave-one-out subsets) behaves as it does on real data. Everything is a pure function
of (seed, split, index): records are generated on access, any size costs no memory, and the train, validation
and test splits never share an image seed.

Options after `?` in a dataset string: `n` (records, default 2000), `seed` (default 0), `types` (comma list of
the families above, default all).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 205, 30)}
SHAPES = ("circle", "square", "triangle")
CELLS = ("top left", "top right", "bottom left", "bottom right")
FAMILIES = ("color", "shape", "count", "exist", "position")
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five"]
IMAGE_SIZE = 64
SPLITS = ("train", "validation", "test")

# Plausible annotator mistakes per answer (what a careless human might say instead).
_CONFUSIONS = {
    "red": ["orange", "pink"], "green": ["teal", "blue"], "blue": ["purple", "green"], "yellow": ["orange", "gold"],
    "circle": ["oval", "round"], "square": ["rectangle", "box"], "triangle": ["pyramid", "arrow"],
    "yes": ["no"], "no": ["yes"],
}


@dataclass(frozen=True)
class Shape:
    shape: str
    color: str
    cell: int


def _rng(seed: int, split: str, index: int | str, salt: str = "") -> random.Random:
    digest = hashlib.sha256(f"shapes|{seed}|{split}|{index}|{salt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def scene(seed: int, split: str, index: int | str) -> list[Shape]:
    """The shapes of image `index`: 1-4 objects in distinct cells."""
    rng = _rng(seed, split, index, "scene")
    count = rng.randint(1, 4)
    cells = rng.sample(range(4), count)
    return [Shape(rng.choice(SHAPES), rng.choice(list(COLORS)), c) for c in cells]


def render(shapes: list[Shape], seed: int, split: str, index: int | str):
    """Draw the scene (PIL RGB image, 64x64) with a little jitter in size and placement."""
    from PIL import Image, ImageDraw

    rng = _rng(seed, split, index, "render")
    shade = rng.randint(225, 250)
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (shade, shade, shade))
    draw = ImageDraw.Draw(img)
    half = IMAGE_SIZE // 2
    for s in shapes:
        x0, y0 = (s.cell % 2) * half, (s.cell // 2) * half
        size = rng.randint(18, 26)
        cx = x0 + half // 2 + rng.randint(-2, 2)
        cy = y0 + half // 2 + rng.randint(-2, 2)
        box = (cx - size // 2, cy - size // 2, cx + size // 2, cy + size // 2)
        fill = COLORS[s.color]
        if s.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif s.shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(cx, box[1]), (box[2], box[3]), (box[0], box[3])], fill=fill)
    return img


def _questions(shapes: list[Shape], rng: random.Random, families: tuple[str, ...]) -> list[tuple[str, str, str, str, str]]:
    """Every question this scene can answer unambiguously: (family, question, answer, answer_type, question_type)."""
    out = []
    by_shape = {k: [s for s in shapes if s.shape == k] for k in SHAPES}
    by_color = {k: [s for s in shapes if s.color == k] for k in COLORS}
    if "color" in families:
        for k, found in by_shape.items():
            if len(found) == 1:
                out.append(("color", f"what color is the {k}?", found[0].color, "other", "what color is the"))
    if "shape" in families:
        for k, found in by_color.items():
            if len(found) == 1:
                out.append(("shape", f"what shape is the {k} object?", found[0].shape, "other", "what"))
    if "count" in families:
        out.append(("count", "how many shapes are there?", str(len(shapes)), "number", "how many"))
        color = rng.choice(list(COLORS))
        out.append(("count", f"how many {color} shapes are there?", str(len(by_color[color])), "number", "how many"))
    if "exist" in families:
        if rng.random() < 0.5:  # half the time ask about an object that is there: balanced yes/no
            s = rng.choice(shapes)
            shape, color = s.shape, s.color
        else:
            shape, color = rng.choice(SHAPES), rng.choice(list(COLORS))
        yes = any(s.shape == shape and s.color == color for s in shapes)
        out.append(("exist", f"is there a {color} {shape}?", "yes" if yes else "no", "yes/no", "is there a"))
    if "position" in families:
        unique = [s for s in shapes if sum(t.shape == s.shape and t.color == s.color for t in shapes) == 1]
        if unique:
            s = rng.choice(unique)
            out.append(("position", f"where is the {s.color} {s.shape}?", CELLS[s.cell], "other", "where is the"))
            side = rng.choice(["left", "right", "top", "bottom"])
            truth = side in CELLS[s.cell]
            out.append(("position", f"is the {s.color} {s.shape} on the {side}?", "yes" if truth else "no",
                        "yes/no", "is the"))
    return out


def _human_answers(answer: str, rng: random.Random) -> list[str]:
    """Ten annotator answers: mostly right, some in another surface form, a few plausible mistakes."""
    answers = []
    for _ in range(10):
        roll = rng.random()
        if roll < 0.08 and answer in _CONFUSIONS:
            answers.append(rng.choice(_CONFUSIONS[answer]))
        elif roll < 0.08 and answer.isdigit():
            answers.append(str(int(answer) + rng.choice([-1, 1]) if int(answer) > 0 else 1))
        elif roll < 0.2 and answer.isdigit() and int(answer) < len(NUMBER_WORDS):
            answers.append(NUMBER_WORDS[int(answer)])
        elif roll < 0.2 and " " in answer:
            answers.append(answer.replace(" ", "-"))
        else:
            answers.append(answer)
    return answers


@dataclass(frozen=True)
class SyntheticOptions:
    n: int = 2000
    seed: int = 0
    types: tuple[str, ...] = FAMILIES


class SyntheticShapes:
    """Sequence of VQA records, generated on access (see the module docstring)."""

    def __init__(self, n: int = 2000, seed: int = 0, split: str = "train", types: tuple[str, ...] = FAMILIES):
        self.n, self.seed, self.split, self.types = n, seed, split, tuple(types)

    def __len__(self) -> int:
        return self.n

    def _draw(self, index: int):
        """(scene key, shapes, question rng, candidate questions) of record `index`; renders nothing."""
        if not 0 <= index < self.n:
            raise IndexError(index)
        for attempt in range(100):  # a scene may offer no question of the chosen families: draw another
            key = index if attempt == 0 else f"{index}#{attempt}"
            shapes = scene(self.seed, self.split, key)
            rng = _rng(self.seed, self.split, key, "question")
            candidates = _questions(shapes, rng, self.types)
            if candidates:
                break
        return key, shapes, rng, candidates

    def question_id(self, index: int) -> str:
        """The question id of record `index` (no scene is drawn)."""
        if not 0 <= index < self.n:
            raise IndexError(index)
        return f"shapes-{self.seed}-{self.split}-{index}"

    def image_id(self, index: int) -> str:
        """What identifies record `index`'s image without rendering it: the scene's (seed, split, key).

        Each record draws its own scene, keyed by its index (or `index#attempt` when the first scene offers no
        question of the chosen `types`), so the same id always renders the same picture, whatever `n` or `types`.
        """
        key = self._draw(index)[0]
        return f"synthetic:shapes?seed={self.seed}/{self.split}/{key}"

    def record(self, index: int) -> dict:
        """Record `index` as a plain dict (see toolkit.data.sources.VQARecord for the fields)."""
        key, shapes, rng, candidates = self._draw(index)
        family = rng.choice(sorted({c[0] for c in candidates}))  # families equally often, then a question
        _, question, answer, answer_type, question_type = rng.choice([c for c in candidates if c[0] == family])
        return {
            "question_id": self.question_id(index),
            "image_id": f"synthetic:shapes?seed={self.seed}/{self.split}/{key}",
            "image": render(shapes, self.seed, self.split, key),
            "question": question,
            "answers": _human_answers(answer, rng),
            "answer_type": answer_type,
            "question_type": question_type,
            "family": family,
            "answer": answer,
        }


def vocabulary() -> list[str]:
    """Every word the generator can put in a question or answer (the demo tokenizer covers them all)."""
    words = set()
    for k in list(COLORS) + list(SHAPES) + list(NUMBER_WORDS) + [str(i) for i in range(10)]:
        words.add(k)
    for alternatives in _CONFUSIONS.values():
        words.update(alternatives)
    for text in ("what color is the", "what shape is the object", "how many shapes are there", "is there a",
                 "where is the", "on the left right top bottom", "yes no"):
        words.update(text.split())
    return sorted(words)


def caption(shapes: list[Shape]) -> str:
    """A description of a scene in the demo vocabulary: 'a red circle at the top left, a blue square at the
    bottom right' (objects in reading order of their cells)."""
    return ", ".join(f"a {s.color} {s.shape} at the {CELLS[s.cell]}" for s in sorted(shapes, key=lambda s: s.cell))


def caption_pairs(n: int, *, seed: int = 0, split: str = "validation") -> list[tuple[str, object, str]]:
    """`n` (image id, PIL image, caption) pairs of distinct captions (retrieval needs one right answer per
    image), scenes drawn in index order from the split's own seeds."""
    out, seen = [], set()
    for index in range(100 * n):
        shapes = scene(seed, split, f"caption-{index}")
        text = caption(shapes)
        if text in seen:
            continue
        seen.add(text)
        out.append((f"synthetic:shapes?seed={seed}/{split}/caption-{index}", render(shapes, seed, split, f"caption-{index}"), text))
        if len(out) == n:
            return out
    raise ValueError(f"only {len(out)} distinct captions in {100 * n} scenes")
