"""VQA accuracy exactly as the official VQAv2 evaluation (GT-Vision-Lab/VQA, `vqaEval.py`, 2021 fix).

    >>> question_accuracy("Two", ["2"] * 6 + ["two"] * 4)   # GT not unanimous: both sides normalised
    1.0
    >>> question_accuracy("yes", ["yes", "no"] * 5)         # matches 5 of 10 human answers
    1.0
    >>> s = score(read_predictions("preds.jsonl"), read_annotations("annotations.jsonl"))
    >>> s["overall"], s["per_answer_type"], s["per_question"]  # percent (2 decimals) and per-question [0, 1]

The official rules, reproduced one by one (tests/evaluation/test_scoring.py checks each):
- '\\n' and '\\t' become spaces and both the human answers and the prediction are stripped;
- only when the human answers are NOT all identical (after that strip) are the answers and the prediction
  normalised: punctuation (`process_punctuation`), then number words, articles and contractions
  (`process_digit_article`, which also lower-cases). With unanimous answers the prediction is compared raw,
  so "Yes" scores 0 against ten "yes": that is the official behaviour, kept on purpose;
- per question: the mean over the leave-one-out subsets (each human answer left out in turn) of
  min(1, matches among the others / 3); 10 answers matching 1, 2, 3, 4 of them give 0.3, 0.6, 0.9, 1.0;
- overall, per answer type and per question type: round(100 * sum / count, 2).

Two points where the official code leaves the case open, decided here: answers are left out by position
(official annotations carry a unique `answer_id`, so its dict comparison also removes exactly one); and a
question with a single human answer, whose leave-one-out subset is empty (the official code would score 0
whatever the prediction), scores exact match. With 2 or 3 answers the formula caps accuracy at 1/3 and 2/3.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from toolkit.errors import InputError

CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am",
    "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock",
    "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}
"""the official contraction map, verbatim (keys with capitals never match: answers are lower-cased first)"""

MANUAL_MAP: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = ("a", "an", "the")
PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
"""the official punctuation list: note that '.', ':', "'", '#', '$', '%', '&', '*' are not in it"""

# `(?!<=\d)` is a look-ahead, not a look-behind, in the official pattern: every '.' not followed by a digit goes
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
# The official call is `periodStrip.sub("", text, re.UNICODE)`: the flag lands in the `count` argument.
_PERIOD_COUNT = int(re.UNICODE)


# ------------------------------------------------------------------------------------------ normalisation


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """The official `processPunctuation`: punctuation next to a space (or anywhere, when the text holds a
    digit-comma-digit such as "1,000") is deleted, elsewhere it becomes a space; then every '.' not followed
    by a digit is deleted (at most 32, as in the official call)."""
    out = text
    for p in PUNCT:
        # the test reads the original text, not the progressively edited one (as the official code does)
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """The official `processDigitArticle`: lower-case, number words to digits, drop articles, contractions."""
    words = []
    for word in text.lower().split():
        word = MANUAL_MAP.get(word, word)
        if word not in ARTICLES:
            words.append(word)
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(text: str) -> str:
    """Everything the official evaluation can do to one answer: whitespace, punctuation, digits, articles.

    >>> normalize_answer("  Two dogs.\\n")
    '2 dogs'
    """
    return process_digit_article(process_punctuation(_clean(text)))


def question_accuracy(prediction: str, answers: list[str]) -> float:
    """Official per-question VQA accuracy in [0, 1] of `prediction` against 1-10 human `answers`."""
    if not answers:
        raise InputError("answers: a question needs at least one human answer")
    gts = [_clean(a) for a in answers]
    res = _clean(prediction)
    if len(set(gts)) > 1:  # the official code normalises only when the human answers disagree
        gts = [process_digit_article(process_punctuation(a)) for a in gts]
        res = process_digit_article(process_punctuation(res))
    if len(gts) == 1:  # empty leave-one-out subset: exact match instead of a constant 0 (see module docs)
        return float(gts[0] == res)
    accs = []
    for left_out in range(len(gts)):
        matches = sum(1 for j, a in enumerate(gts) if j != left_out and a == res)
        accs.append(min(1, float(matches) / 3))
    return float(sum(accs)) / len(accs)


# ---------------------------------------------------------------------------------------------- scoring


def _pct(values: list[float]) -> float:
    return round(100 * float(sum(values)) / len(values), 2)  # the official expression, digit for digit


def _key(qid, where: str) -> str:
    """ids are matched by how they print: 7 and "7" are the same question."""
    if isinstance(qid, bool) or not isinstance(qid, (int, str)) or str(qid).strip() == "":
        raise InputError(f"{where}: question_id must be a non-empty integer or string, got {qid!r}")
    return str(qid)


def _examples(ids: list, k: int = 3) -> str:
    shown = ", ".join(str(i) for i in ids[:k])
    return shown + (", ..." if len(ids) > k else "")


def _count(items: list, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _check_answers(value, where: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise InputError(f"{where}: 'answers' must be a non-empty list of strings (or of {{\"answer\": str}})")
    out = []
    for a in value:
        if isinstance(a, dict):
            a = a.get("answer")
        if not isinstance(a, str):
            raise InputError(f"{where}: every answer must be a string (or {{\"answer\": str}}), got {a!r}")
        out.append(a)
    return out


def _check_type(value, name: str, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InputError(f"{where}: '{name}' must be a string, got {value!r}")
    return value


def score(predictions: Mapping, annotations: Iterable[Mapping], *, allow_missing: bool = False) -> dict:
    """Official VQA accuracy of `predictions` ({question_id: answer}) against `annotations`.

    Returns {"overall", "per_answer_type", "per_question_type" (percent, 2 decimals), "n",
    "per_question" {question_id: accuracy in [0, 1], unrounded}, "skipped" {counts}}. Question ids present on
    one side only are refused (one line with counts and examples) unless `allow_missing`, which scores the
    questions present in both and reports how many were skipped on each side.
    """
    anns: dict[str, dict] = {}
    for i, ann in enumerate(annotations, start=1):
        where = f"annotations: record {i}"
        if not isinstance(ann, Mapping) or "question_id" not in ann:
            raise InputError(f"{where}: expected an object with 'question_id' and 'answers'")
        key = _key(ann["question_id"], where)
        if key in anns:
            raise InputError(f"annotations: duplicate question_id {ann['question_id']!r}")
        anns[key] = {"question_id": ann["question_id"], "answers": _check_answers(ann.get("answers"), where),
                     "answer_type": _check_type(ann.get("answer_type"), "answer_type", where),
                     "question_type": _check_type(ann.get("question_type"), "question_type", where)}
    preds: dict[str, tuple] = {}  # key -> (question_id as given, answer)
    for qid, answer in predictions.items():
        key = _key(qid, "predictions")
        if key in preds:
            raise InputError(f"predictions: duplicate question_id {qid!r} (ids that print the same are one question)")
        if not isinstance(answer, str):
            raise InputError(f"predictions: the answer to question {qid!r} must be a string, got {answer!r}")
        preds[key] = (qid, answer)
    if not anns:
        raise InputError("annotations: no questions to score")
    if not preds:
        raise InputError("predictions: no predictions to score")
    only_pred = [qid for k, (qid, _) in preds.items() if k not in anns]
    only_ann = [anns[k]["question_id"] for k in anns if k not in preds]
    keys = [k for k in anns if k in preds]
    if (only_pred or only_ann) and not allow_missing:
        parts = []
        if only_pred:
            parts.append(f"{_count(only_pred, 'predicted question')} without annotation (e.g. {_examples(only_pred)})")
        if only_ann:
            parts.append(f"{_count(only_ann, 'annotated question')} without prediction (e.g. {_examples(only_ann)})")
        raise InputError(f"predictions: {' and '.join(parts)}; --allow-missing scores the {len(keys)} questions in both")
    if not keys:
        raise InputError(f"predictions: none of the {len(preds)} predicted question ids is in the annotations "
                         f"(e.g. {_examples(only_pred)})")

    per_question: dict = {}
    by_answer_type: dict[str, list[float]] = {}
    by_question_type: dict[str, list[float]] = {}
    for k in keys:
        ann = anns[k]
        acc = question_accuracy(preds[k][1], ann["answers"])
        per_question[ann["question_id"]] = acc
        if ann["answer_type"] is not None:
            by_answer_type.setdefault(ann["answer_type"], []).append(acc)
        if ann["question_type"] is not None:
            by_question_type.setdefault(ann["question_type"], []).append(acc)
    return {
        "overall": _pct(list(per_question.values())),
        "per_answer_type": {t: _pct(v) for t, v in by_answer_type.items()},
        "per_question_type": {t: _pct(v) for t, v in by_question_type.items()},
        "n": len(keys),
        "per_question": per_question,
        "skipped": {"predictions_without_annotation": len(only_pred), "annotations_without_prediction": len(only_ann),
                    "examples": {"predictions": only_pred[:5], "annotations": only_ann[:5]}},
    }


# ---------------------------------------------------------------------------------------------- readers


def _records(path, field: str) -> tuple[str, list[tuple[str, dict]]]:
    """("<field>: '<path>'", [(location, object)]) from JSONL, a JSON array, or the official
    {"annotations": [...]} file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{field}: no such file '{p}'")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{field}: cannot read '{p}' ({exc})") from None
    prefix = f"{field}: '{p}'"
    if not text.strip():
        raise InputError(f"{prefix} is empty")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and isinstance(whole.get("annotations"), list):
        whole = whole["annotations"]
    if isinstance(whole, list):
        pairs = [(f"item {i}", obj) for i, obj in enumerate(whole, start=1)]
    else:
        pairs = []
        # records end at "\n" only: str.splitlines() also splits at U+2028 and other separators that are
        # valid inside a JSON string
        for n, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                pairs.append((f"line {n}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise InputError(f"{prefix} line {n} is not valid JSON ({exc.msg})") from None
    if not pairs:
        raise InputError(f"{prefix} holds no records")
    for where, obj in pairs:
        if not isinstance(obj, dict):
            raise InputError(f"{prefix} {where} is not a JSON object")
        if "question_id" not in obj:
            raise InputError(f"{prefix} {where} has no 'question_id'")
    return prefix, pairs


def _unique(prefix: str, pairs: list[tuple[str, dict]]):
    """Yield (location, object), refusing a question_id seen before (ids that print the same are one)."""
    seen: dict[str, str] = {}
    for where, obj in pairs:
        key = _key(obj["question_id"], f"{prefix} {where}")
        if key in seen:
            raise InputError(f"{prefix} {where}: duplicate question_id {obj['question_id']!r} (first at {seen[key]})")
        seen[key] = where
        yield f"{prefix} {where}", obj


def read_predictions(path) -> dict:
    """{question_id: answer} from JSONL lines {"question_id", "answer"} (or "prediction", as in an eval's
    predictions.jsonl), or from the official results file (a JSON array of the same objects)."""
    out: dict = {}
    for where, obj in _unique(*_records(path, "predictions")):
        answer = obj.get("answer", obj.get("prediction"))
        if not isinstance(answer, str):
            raise InputError(f"{where}: 'answer' must be a string, got {answer!r}")
        out[obj["question_id"]] = answer
    return out


def read_annotations(path) -> list[dict]:
    """[{"question_id", "answers": [str], "answer_type", "question_type"}] from JSONL (answers as strings or
    as VQAv2's [{"answer": ...}]), a JSON array, or the official annotations file."""
    out = []
    for where, obj in _unique(*_records(path, "annotations")):
        if "answers" not in obj:
            raise InputError(f"{where}: has no 'answers' (a list of 1-10 human answers)")
        out.append({"question_id": obj["question_id"], "answers": _check_answers(obj["answers"], where),
                    "answer_type": _check_type(obj.get("answer_type"), "answer_type", where),
                    "question_type": _check_type(obj.get("question_type"), "question_type", where)})
    return out
