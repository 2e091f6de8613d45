"""lmms-eval's per-sample outputs brought back as an evaluation of the adapter, so `compare` can pool them.

    python -m lmms_eval --model llava_hf --model_args pretrained=exports/demo-1-4-1 --tasks vqav2_val \\
        --log_samples --output_path lmms-eval-out                # on the export (toolkit/interop/export.py)
    python -m toolkit import-eval --adapter adapters/demo-1-4-1-rank8-s0 --dataset lmms-lab/VQAv2 \\
        --split validation lmms-eval-out/<model>/<date>_samples_vqav2_val.jsonl
    python -m toolkit compare --dataset lmms-eval__vqav2_val__n5000

    >>> doc = import_samples("adapters/demo-1-4-1-rank8-s0", "samples_vqav2_val.jsonl", dataset="lmms-lab/VQAv2")
    >>> doc["path"]          # adapters/demo-1-4-1-rank8-s0/eval/lmms-eval__vqav2_val__n5000

The file is what `--log_samples` writes (lmms_eval/loggers/evaluation_tracker.py, `save_results_samples`): one
JSON object per line with `doc_id` (the row of the task's split), `input` (the prompt), `target`,
`filtered_resps` (the scored answer; a one-element list is flattened to its value), `resps` (left out when equal),
`doc_hash`, and one field per metric of the task's `process_results` (vqav2_val: `exact_match`). lmms-eval 0.4 and
later drop `doc`, so the question ids, human answers and image ids are read from the split the task read
(`dataset` + `split`, row `doc_id`; each prompt must contain its row's question, or the file is refused); lines
that still carry `doc` (lmms-eval 0.3, or a logger that keeps it) are read from it and need no dataset.

Answers are scored again with the official VQA scorer (toolkit.evaluation.scoring) when human answers are known;
otherwise (a test split) the task's own per-sample metric is the question's accuracy. Each record keeps its
`image_id`, so questions on one image are resampled together, and the results go through toolkit.runs as
`eval/lmms-eval__<task>__n<N>/`, the tag `compare` selects. A file whose task or question ids differ from another
import of the same tag in the store (another seed or ratio of the study) is refused in one line.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

from toolkit import runs
from toolkit.errors import InputError

HARNESS = "lmms-eval"
KNOWN_FIELDS = ("doc_id", "doc", "input", "target", "arguments", "resps", "filtered_resps", "doc_hash",
                "prompt_hash", "target_hash", "token_counts", "input_media")
"""what a samples line holds besides the task's metrics"""
_FILE = re.compile(r"^(?:.*_)?samples_(?P<task>[A-Za-z0-9_.\-]+)\.jsonl$")


def eval_tag(task: str, n: int) -> str:
    """`lmms-eval__<task>__n<N>`: the eval set `compare` offers for an imported task."""
    return f"{HARNESS}__{runs.slug(task, keep='_-.', limit=80, empty='task')}__n{n}"


def task_from_name(path: Path) -> str | None:
    """`20250101_120000_samples_vqav2_val.jsonl` -> `vqav2_val` (lmms-eval's file name)."""
    m = _FILE.match(path.name)
    return m.group("task") if m else None


def read_samples(path: str | Path) -> list[dict]:
    """The lines of a `--log_samples` file, checked: JSON objects with a whole `doc_id`, distinct, and an answer."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"samples: '{path}' not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"samples: cannot read '{path}' ({exc})") from None
    out, seen = [], set()
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InputError(f"samples: '{path}' line {n} is not JSON ({exc}); expected lmms-eval's --log_samples "
                             f"lines") from None
        if not isinstance(row, dict) or not isinstance(row.get("doc_id"), int) or isinstance(row["doc_id"], bool):
            raise InputError(f"samples: '{path}' line {n} has no whole-number doc_id (not lmms-eval's --log_samples "
                             f"format)")
        if row["doc_id"] in seen:
            raise InputError(f"samples: '{path}' line {n} repeats doc_id {row['doc_id']} (two runs appended to one "
                             f"file?)")
        seen.add(row["doc_id"])
        row["_answer"] = answer_of(row, f"samples: '{path}' line {n}")
        out.append(row)
    if not out:
        raise InputError(f"samples: '{path}' holds no samples")
    return out


def answer_of(row: dict, where: str) -> str:
    """The scored answer: `filtered_resps` (a text, or nested one-element lists of one), else `resps`."""
    value = row.get("filtered_resps", row.get("resps"))
    while isinstance(value, list) and value:
        value = value[0]
    if not isinstance(value, str):
        raise InputError(f"{where} (doc_id {row['doc_id']}): filtered_resps must hold the model's text answer, got "
                         f"{str(value)[:60]!r}")
    return value


def metrics_of(row: dict) -> dict:
    """The task's per-sample metrics on a line (every numeric field lmms-eval does not write for every task)."""
    return {k: v for k, v in row.items() if k not in KNOWN_FIELDS and not k.startswith("_")
            and isinstance(v, int | float) and not isinstance(v, bool)}


class _Identities:
    """(question_id, image_id) of the imported questions, for the hygiene check (toolkit.data.hygiene)."""

    def __init__(self, records: list[dict]):
        self.pairs = [(r["question_id"], r["image_id"]) for r in records]

    def identities(self):
        return self.pairs


def _records_from_docs(samples: list[dict], where: str) -> list[dict]:
    from toolkit.data.rows import answers_of

    out = []
    for s in samples:
        doc = s["doc"]
        if not isinstance(doc, dict) or doc.get("question_id") is None:
            raise InputError(f"{where}: doc_id {s['doc_id']}: its doc has no question_id")
        qid = str(doc["question_id"])
        out.append({"question_id": qid, "question": doc.get("question"), "answers": answers_of(doc.get("answers"), qid),
                    "image_id": None if doc.get("image_id") is None else f"image_id:{doc['image_id']}",  # as load_vqa
                    "answer_type": doc.get("answer_type"), "question_type": doc.get("question_type")})
    return out


def _records_from_dataset(samples: list[dict], where: str, *, dataset: str, split: str, columns, image_dir) -> list[dict]:
    from toolkit.data.sources import load_vqa

    data = load_vqa(dataset, split=split, columns=columns or {}, image_dir=image_dir)  # no limit: row i is doc_id i
    ids = data.identities()
    out = []
    for s in samples:
        i = s["doc_id"]
        if not 0 <= i < len(data):
            raise InputError(f"{where}: doc_id {i} is not a row of '{dataset}' (split {split}, {len(data)} rows); "
                             f"the file was made on another dataset or split")
        r = data[i]
        prompt = s.get("input")
        if isinstance(prompt, str) and r.question.strip() not in prompt:
            raise InputError(f"{where}: doc_id {i}: its prompt does not contain row {i}'s question "
                             f"({r.question[:60]!r}) of '{dataset}' (split {split}); the file was made on another "
                             f"dataset or split")
        out.append({"question_id": ids[i][0], "question": r.question, "answers": list(r.answers),
                    "image_id": ids[i][1], "answer_type": r.answer_type, "question_type": r.question_type})
    return out


def check_matches_store(folder: Path, tag: str, task: str, question_ids: set[str]) -> None:
    """Refuse when another import of `tag` in the store (this adapter's or another run's) has another task or
    other questions: compare pairs runs question by question."""
    for other in runs.run_folders(folder.parent):
        if not (runs.eval_dir(other, tag) / runs.RESULTS).is_file():
            continue
        where = f"{other.name}/{runs.EVAL}/{tag}"
        theirs = (runs.read_evaluation(other, tag).extra.get("lmms_eval") or {}).get("task")
        if theirs != task:
            raise InputError(f"samples: task '{task}' differs from '{theirs}' imported as {where}; one tag, one task")
        preds = runs.read_predictions(other, tag) or []
        ids = {p.question_id for p in preds}
        if ids != question_ids:
            raise InputError(f"samples: its {len(question_ids)} question ids differ from the {len(ids)} of {where} "
                             f"({len(question_ids - ids)} new, {len(ids - question_ids)} missing); every adapter of a "
                             f"study must be scored on the same task, split and --limit")


def import_samples(adapter: str | Path, samples_file: str | Path, *, task: str | None = None,
                   dataset: str | None = None, split: str = "validation", columns: dict | None = None,
                   image_dir: str | None = None, metric: str | None = None, allow_contaminated: bool = False,
                   log=lambda m: None) -> dict:
    """Store an lmms-eval samples file as the evaluation `lmms-eval__<task>__n<N>` of `adapter`; returns its
    results.json (with its `path`). InputError, one line, for a malformed file, a task that cannot be named, lines
    that cannot be matched to questions, or questions that differ from another import of the same tag."""
    from toolkit.evaluation.evaluate import check_hygiene, check_writable, read_adapter, score_answers

    folder = Path(adapter)
    cmba = read_adapter(folder)
    if cmba.kind == "base":
        raise InputError(f"adapter: '{folder}' is a base-model reference; import into an adapter folder")
    check_writable(folder)
    path = Path(samples_file)
    task = task or task_from_name(path)
    if not task:
        raise InputError(f"task: cannot be read from the file name '{path.name}' (lmms-eval writes "
                         f"<date>_samples_<task>.jsonl); pass --task")
    samples = read_samples(path)
    where = f"samples: '{path}'"
    with_doc = ["doc" in s for s in samples]
    if all(with_doc):
        records = _records_from_docs(samples, where)
        source = {"id": f"{HARNESS}:{task}", "split": task, "from": "doc"}
    elif dataset:
        records = _records_from_dataset(samples, where, dataset=dataset, split=split, columns=columns,
                                        image_dir=image_dir)
        source = {"id": dataset, "split": split, "from": "dataset"}
    else:
        raise InputError(f"dataset: '{path.name}' holds no doc (lmms-eval 0.4+ does not log it): pass --dataset and "
                         f"--split of the split the task read (vqav2_val: --dataset lmms-lab/VQAv2 --split validation)")
    qids = [r["question_id"] for r in records]
    if len(set(qids)) != len(qids):
        raise InputError(f"{where}: two lines are the same question; the file holds one run of one task")

    class _Rec:  # what score_answers reads of a VQA record
        def __init__(self, r):
            self.__dict__.update(r)

    answered = all(r["answers"] for r in records)
    metrics = [metrics_of(s) for s in samples]
    if answered:  # the official scorer on the raw (stripped) answer, as for our own evaluations
        scores, predictions = score_answers(records=[_Rec(r) for r in records], raw=[s["_answer"] for s in samples])
        scored_with = "official VQA accuracy (toolkit.evaluation.scoring)"
    else:
        names = sorted(set().union(*metrics))
        metric = metric or (names[0] if len(names) == 1 else None)
        if not metric or any(metric not in m for m in metrics):
            raise InputError(f"metric: the questions have no human answers; name the task's per-sample metric to use "
                             f"as accuracy (--metric; the file has {', '.join(names) or 'none'})")
        predictions = [{"question_id": r["question_id"], "question": r["question"], "prediction": s["_answer"].strip(),
                        "raw_prediction": s["_answer"], "answers": [], "answer_type": r["answer_type"],
                        "question_type": r["question_type"], "image_id": r["image_id"], "accuracy": float(m[metric])}
                       for r, s, m in zip(records, samples, metrics, strict=True)]
        overall = 100 * sum(p["accuracy"] for p in predictions) / len(predictions)
        scores = {"overall": round(overall, 2), "per_answer_type": {}, "per_question_type": {}, "n": len(predictions)}
        scored_with = f"the task's per-sample {metric}"
    for p, s, m in zip(predictions, samples, metrics, strict=True):
        p["extra"] = {"doc_id": s["doc_id"], "lmms_eval_metrics": m}

    tag = eval_tag(task, len(records))
    hygiene = check_hygiene(folder, _Identities(records), allow_contaminated=allow_contaminated)
    if hygiene.get("contaminated"):
        tag += "__contaminated"
        log(hygiene["note"])
    check_matches_store(folder, tag, task, set(qids))
    means = {k: round(sum(m[k] for m in metrics) / len(metrics), 6) for k in sorted(set().union(*metrics))
             if all(k in m for m in metrics)}
    result = runs.EvalResult(
        adapter=cmba.name, base_model=cmba.base_model.id,
        dataset={**source, "n": len(records), "limit": None, "hygiene": hygiene},
        settings={"harness": HARNESS, "task": task, "scored_with": scored_with, "decoding": "as lmms-eval ran it"},
        scores=scores, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        extra={"lmms_eval": {"task": task, "file": str(path.resolve()), "metrics_mean": means}})
    where_written = runs.write_evaluation(folder, tag, result=result,
                                          predictions=[runs.Prediction(**p) for p in predictions])
    log(f"imported {len(records)} samples of {task} into {where_written}")
    return {**result.to_dict(), "tag": tag, "path": str(where_written)}
