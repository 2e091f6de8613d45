"""Adapter folders written without training, for the comparison tests: a cmba.json, an evaluation and per-question
predictions with exactly the accuracies a test asks for.

    write_adapter(store, "r1-4-1-s0", ratio=(1, 4, 1), seed=0, accs=pattern(220, offset=7))
    sweep(store, {"1:1:1": (0, 0), "1:4:1": (12, 0)})      # 3 seeds per ratio, gains in flipped answers
"""

from __future__ import annotations

import json
from pathlib import Path

TAG = "synthetic-shapes__val__n400"
TYPES = ("yes/no", "number", "other")
N = 400


def write_adapter(store: Path, name: str, *, ratio=(1, 1, 1), seed=0, accs, base_model="demo", budget=100_000,
                  params=None, ranks=(8, 8, 8), tag=TAG, mode="rank", kind="adapter", losses=(2.0, 1.5, 1.2), training=None) -> Path:
    folder = store / name
    (folder / "eval" / tag).mkdir(parents=True, exist_ok=True)
    qtypes = [TYPES[i % 3] for i in range(len(accs))]
    per_type = {t: round(100 * sum(a for a, q in zip(accs, qtypes) if q == t) / qtypes.count(t), 2) for t in TYPES}
    cmba = {"format": "cmba-adapter/1", "name": name, "kind": kind, "created": "2026-01-01T00:00:00",
            "base_model": {"id": base_model, "hub_id": None, "revision": None, "model_type": "llava"},
            "training": {"seed": seed, **(training or {})}, "dataset": {"id": "synthetic:shapes", "split": "train", "size": 2000},
            "result": {"steps": 10, "train_time_s": 12.5, "peak_memory_bytes": 1 << 30}}
    if kind == "adapter":
        cmba["allocation"] = {
            "model": base_model, "mode": mode, "ratio": list(ratio), "budget": budget,
            "budget_spec": "uniform rank 8 equivalent", "total": params or budget,
            "components": {c: {"rank": r} for c, r in zip(("vision", "projector", "language"), ranks)}}
    (folder / "cmba.json").write_text(json.dumps(cmba))
    results = {"format": "cmba-eval/1", "adapter": name, "base_model": base_model,
               "dataset": {"id": "synthetic:shapes", "split": "val", "limit": len(accs), "n": len(accs)},
               "scores": {"overall": round(100 * sum(accs) / len(accs), 2), "per_answer_type": per_type,
                          "per_question_type": {}, "n": len(accs)}, "eval_time_s": 3.0}
    (folder / "eval" / tag / "results.json").write_text(json.dumps(results))
    with open(folder / "eval" / tag / "predictions.jsonl", "w") as f:
        for i, (acc, qt) in enumerate(zip(accs, qtypes)):
            f.write(json.dumps({"question_id": i, "question": "q?", "prediction": "p", "answers": ["a"] * 10,
                                "answer_type": qt, "question_type": "what", "accuracy": acc}) + "\n")
    with open(folder / "metrics.jsonl", "w") as f:
        for step, loss in enumerate(losses, start=1):
            f.write(json.dumps({"step": step, "max_steps": len(losses), "loss": loss}) + "\n")
    return folder


def pattern(correct: int, n: int = N, offset: int = 0) -> list[float]:
    """0/1 accuracies with `correct` ones, rotated by `offset` so seeds differ per question."""
    base = [1.0] * correct + [0.0] * (n - correct)
    return base[offset:] + base[:offset]


def flip(accs: list[float], up: int, down: int = 0) -> list[float]:
    """`up` wrong answers become right and `down` right ones wrong: exactly (up - down) / n more accuracy."""
    out = list(accs)
    wrong, right = [i for i, a in enumerate(out) if a == 0], [i for i, a in enumerate(out) if a == 1]
    for i in wrong[:up]:
        out[i] = 1.0
    for i in right[:down]:
        out[i] = 0.0
    return out


def sweep(store: Path, gains: dict[str, tuple[int, int]], seeds=(0, 1, 2), **kw) -> None:
    """Ratios (label -> (up, down) flips against the 1:1:1 pattern of the same seed), 3 seeds each."""
    for label, (up, down) in gains.items():
        for s in seeds:
            ratio = tuple(float(x) for x in label.split(":"))
            write_adapter(store, f"r{label.replace(':', '-')}-s{s}", ratio=ratio, seed=s,
                          accs=flip(pattern(200 + 4 * s, offset=7 * s), up, down), **kw)


def designed_store(folder: Path) -> None:
    """Centroid arms + three interior ones, 2 seeds each, accuracies peaking at 1:2:1 (per-question 0/1)."""
    import numpy as np

    from toolkit.study.design import Design

    best = np.array([1, 2, 1]) / 4
    for r in Design.parse("simplex-centroid").ratios() + ("1:2:1", "2:1:1", "1:1:2"):
        w = np.array([float(v) for v in r.split(":")])
        acc = 0.7 - 0.6 * float(np.sum((w / w.sum() - best) ** 2))
        for s in (0, 1):
            write_adapter(folder, f"r{r.replace(':', '-')}-s{s}", ratio=tuple(w), seed=s,
                          accs=pattern(round(400 * acc) + s, offset=5 * s))
