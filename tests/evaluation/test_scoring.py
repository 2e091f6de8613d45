"""Official VQAv2 accuracy: every normalisation rule of vqaEval.py, leave-one-out averaging, aggregation, readers.

Expected values are worked out by hand from the official code (GT-Vision-Lab/VQA,
PythonEvaluationTools/vqaEvaluation/vqaEval.py), not taken from this implementation.
"""

import json

import pytest

from toolkit.errors import InputError
from toolkit.evaluation.scoring import (
    normalize_answer,
    process_digit_article,
    process_punctuation,
    question_accuracy,
    read_annotations,
    read_predictions,
    score,
)

# ------------------------------------------------------------------ normalisation rules


@pytest.mark.parametrize(("text", "expected"), [
    # contractions, one per class of the official map
    ("dont", "don't"), ("isnt", "isn't"), ("cant", "can't"), ("wont", "won't"), ("im", "im"),  # "Im" key is never hit
    ("whats", "what's"), ("theyre", "they're"), ("youve", "you've"), ("itll", "it'll"), ("hes", "he's"),
    ("couldnt've", "couldn't've"), ("couldn'tve", "couldn't've"), ("yall'd've", "y'all'd've"), ("oclock", "o'clock"),
    ("twas", "'twas"), ("maam", "ma'am"), ("somebody'd", "somebodyd"),  # the official map's own quirk
    ("Dont", "don't"),  # lower-cased before the lookup
    # number words (only zero..ten and none) become digits
    ("two", "2"), ("Ten", "10"), ("none", "0"), ("zero", "0"), ("eleven", "eleven"), ("two dogs", "2 dogs"),
    # articles are dropped as whole words only
    ("a dog", "dog"), ("the red car", "red car"), ("an apple", "apple"), ("theater", "theater"), ("A", ""),
    # whitespace collapses to single spaces
    ("  red   car ", "red car"),
])
def test_process_digit_article(text, expected):
    assert process_digit_article(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("t-shirt", "t shirt"),            # no space next to '-': it becomes a space
    ("red, white", "red white"),       # ', ' in the text: every ',' is deleted
    ("red,white", "red white"),        # no space around it: replaced by a space
    ("yes!", "yes "),                  # punctuation at the end, no space next to it: a space (stripped later)
    ("1,000", "1000"),                 # digit-comma-digit: every punctuation mark is deleted, not spaced
    ("1,000-2,000", "10002000"),       # ... including '-', because the comma rule looks at the whole text
    ("3.5", "3.5"), ("end.", "end"),   # a '.' followed by a digit stays, any other '.' goes
    ("a.m.", "am"), (".5", ".5"),
    ("x/y", "x y"), ("(a)", " a "), ('"hi"', " hi "), ("@home", " home"),
    ("it's", "it's"), ("10:30", "10:30"), ("#1", "#1"), ("50%", "50%"),  # ' : # % are not in the list
    ("a - b", "a  b"),                 # '-' next to a space is deleted
])
def test_process_punctuation(text, expected):
    assert process_punctuation(text) == expected


def test_period_strip_stops_after_32_periods():
    # the official call passes re.UNICODE (32) where `count` goes
    assert process_punctuation("a." * 40) == "a" * 32 + "a." * 8


def test_normalize_answer_chains_whitespace_punctuation_digits_articles():
    assert normalize_answer("  The Two dogs.\n") == "2 dogs"
    assert normalize_answer("Isnt\tit?") == "isn't it"


# ------------------------------------------------------------------ when normalisation happens


def test_disagreeing_answers_normalise_both_sides():
    answers = ["2"] * 6 + ["two"] * 4  # not unanimous: "two" -> "2" on both sides
    assert question_accuracy("Two", answers) == 1.0
    assert question_accuracy("two.", answers) == 1.0


def test_unanimous_answers_compare_the_prediction_raw():
    # all ten agree: the official code skips punctuation/digit/article processing entirely
    assert question_accuracy("two", ["2"] * 10) == 0.0
    assert question_accuracy("Yes", ["yes"] * 10) == 0.0
    assert question_accuracy("yes.", ["yes"] * 10) == 0.0
    assert question_accuracy(" yes\n", ["yes"] * 10) == 1.0  # only \n, \t and the strip apply
    assert question_accuracy("yes", ["yes\t"] * 9 + [" yes"]) == 1.0  # unanimous once stripped
    # one dissenting answer switches normalisation on for the prediction too
    assert question_accuracy("Yes", ["yes"] * 9 + ["no"]) == 1.0


# ------------------------------------------------------------------ leave-one-out averaging


@pytest.mark.parametrize(("k", "expected"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_leave_one_out_over_ten_answers(k, expected):
    # k answers match. Leaving out a matching one leaves k-1 matches (k subsets), a non-matching one leaves k
    # (10-k subsets): (k*min(1,(k-1)/3) + (10-k)*min(1,k/3)) / 10, e.g. k=3: (3*2/3 + 7*1)/10 = 0.9
    answers = ["cat"] * k + [f"dog{i}" for i in range(10 - k)]
    assert question_accuracy("cat", answers) == pytest.approx(expected, abs=1e-12)


def test_fewer_answers_follow_the_same_formula():
    assert question_accuracy("cat", ["cat", "dog"]) == pytest.approx(1 / 6)   # (0 + 1/3) / 2
    assert question_accuracy("cat", ["cat", "cat", "cat"]) == pytest.approx(2 / 3)  # raw compare, 2 others match
    assert question_accuracy("cat", ["cat"] * 4 + ["dog"]) == pytest.approx(1.0)
    # a single answer leaves an empty subset: exact match rather than a constant 0
    assert question_accuracy("cat", ["cat"]) == 1.0 and question_accuracy("dog", ["cat"]) == 0.0
    with pytest.raises(InputError, match="at least one"):
        question_accuracy("cat", [])


# ------------------------------------------------------------------ aggregation


def _anns():
    return [
        {"question_id": 1, "answers": ["yes"] * 10, "answer_type": "yes/no", "question_type": "is the"},
        {"question_id": 2, "answers": ["no"] * 10, "answer_type": "yes/no", "question_type": "is the"},
        {"question_id": 3, "answers": ["2"] * 2 + ["3"] * 8, "answer_type": "number", "question_type": "how many"},
        {"question_id": "q4", "answers": [{"answer": "red"}] * 5 + [{"answer": "blue"}] * 5, "answer_type": "other",
         "question_type": "what color"},
    ]


def test_score_aggregates_per_type_in_rounded_percent():
    s = score({1: "yes", 2: "yes", 3: "two", "q4": "red"}, _anns())
    # q1 1.0, q2 0.0, q3 "two"->"2" matches 2 of 10: 0.6, q4 1.0
    assert s["per_question"] == {1: 1.0, 2: 0.0, 3: pytest.approx(0.6), "q4": 1.0}
    assert s["n"] == 4
    assert s["overall"] == 65.0  # 100 * 2.6 / 4
    assert s["per_answer_type"] == {"yes/no": 50.0, "number": 60.0, "other": 100.0}
    assert s["per_question_type"] == {"is the": 50.0, "how many": 60.0, "what color": 100.0}


def test_score_rounds_to_two_decimals_like_the_official_code():
    anns = [{"question_id": i, "answers": ["a"] * 10} for i in range(3)]
    s = score({0: "a", 1: "b", 2: "b"}, anns)
    assert s["overall"] == 33.33 and s["per_question"][0] == 1.0
    assert s["per_answer_type"] == {} and s["per_question_type"] == {}  # types are optional


def test_ids_that_print_the_same_match():
    s = score({"1": "yes", 2: "no"}, [{"question_id": 1, "answers": ["yes"]}, {"question_id": "2", "answers": ["no"]}])
    assert s["overall"] == 100.0 and set(s["per_question"]) == {1, "2"}  # annotation ids kept as given


def test_missing_ids_refused_unless_allowed():
    anns = _anns()
    preds = {1: "yes", 2: "no", 3: "3", 99: "x", 98: "y"}
    with pytest.raises(InputError) as exc:
        score(preds, anns)
    msg = str(exc.value)
    assert "2 predicted questions without annotation (e.g. 99, 98)" in msg
    assert "1 annotated question without prediction (e.g. q4)" in msg and "\n" not in msg
    s = score(preds, anns, allow_missing=True)
    assert s["n"] == 3 and s["skipped"]["predictions_without_annotation"] == 2
    assert s["skipped"]["annotations_without_prediction"] == 1
    with pytest.raises(InputError, match="none of the 1 predicted"):
        score({77: "x"}, anns, allow_missing=True)


def test_duplicate_and_malformed_inputs():
    with pytest.raises(InputError, match="predictions: duplicate question_id '1'"):
        score({1: "a", "1": "b"}, [{"question_id": 1, "answers": ["a"]}])
    with pytest.raises(InputError, match="annotations: duplicate question_id '1'"):
        score({1: "a"}, [{"question_id": 1, "answers": ["a"]}, {"question_id": "1", "answers": ["a"]}])
    with pytest.raises(InputError, match="'answers' must be a non-empty list"):
        score({1: "a"}, [{"question_id": 1, "answers": []}])
    with pytest.raises(InputError, match="must be a string"):
        score({1: 3}, [{"question_id": 1, "answers": ["3"]}])
    with pytest.raises(InputError, match="question_id must be"):
        score({1.5: "a"}, [{"question_id": 1, "answers": ["a"]}])


# ------------------------------------------------------------------ readers


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_readers_round_trip_jsonl_and_official_forms(tmp_path):
    preds = _write(tmp_path / "p.jsonl", [json.dumps({"question_id": 1, "answer": "Two"}), "",
                                          json.dumps({"question_id": "x", "prediction": "yes"})])
    assert read_predictions(preds) == {1: "Two", "x": "yes"}
    anns = _write(tmp_path / "a.jsonl", [json.dumps({"question_id": 1, "answers": [{"answer": "2", "answer_id": 1}],
                                                     "answer_type": "number"})])
    assert read_annotations(anns) == [{"question_id": 1, "answers": ["2"], "answer_type": "number",
                                       "question_type": None}]
    official = tmp_path / "results.json"  # the official results file: one JSON array
    official.write_text(json.dumps([{"question_id": 5, "answer": "no"}]))
    assert read_predictions(official) == {5: "no"}
    official_anns = tmp_path / "ann.json"
    official_anns.write_text(json.dumps({"annotations": [{"question_id": 5, "answers": [{"answer": "no"}]}]}))
    assert read_annotations(official_anns)[0]["answers"] == ["no"]


@pytest.mark.parametrize(("lines", "needle"), [
    ([], "is empty"),
    (['{"question_id": 1, "answer": "a"}', "{oops"], "line 2 is not valid JSON"),
    (['{"question_id": 1, "answer": "a"}', '{"question_id": "1", "answer": "b"}'],
     "line 2: duplicate question_id '1' (first at line 1)"),
    (['{"answer": "a"}'], "line 1 has no 'question_id'"),
    (['{"question_id": 1}'], "line 1: 'answer' must be a string"),
    (["[1, 2]"], "item 1 is not a JSON object"),
])
def test_bad_prediction_files_name_file_and_line(tmp_path, lines, needle):
    path = _write(tmp_path / "p.jsonl", lines)
    with pytest.raises(InputError) as exc:
        read_predictions(path)
    assert needle in str(exc.value) and str(path) in str(exc.value) and str(exc.value).startswith("predictions:")


def test_bad_annotation_files(tmp_path):
    with pytest.raises(InputError, match="annotations: no such file"):
        read_annotations(tmp_path / "missing.jsonl")
    with pytest.raises(InputError, match="line 1: has no 'answers'"):
        read_annotations(_write(tmp_path / "a.jsonl", ['{"question_id": 1}']))
    with pytest.raises(InputError, match="line 1: every answer must be a string"):
        read_annotations(_write(tmp_path / "b.jsonl", ['{"question_id": 1, "answers": [{"text": "a"}]}']))


# ------------------------------------------------------------------ evaluate's scoring and JSONL records


@pytest.mark.parametrize("answer", ["t-shirt", "one way", "st. louis"])
def test_evaluate_scores_the_raw_prediction_against_unanimous_answers(answer):
    from toolkit.data.sources import VQARecord
    from toolkit.evaluation.evaluate import score_answers
    from toolkit.evaluation.scoring import normalize_answer

    assert normalize_answer(answer) != answer  # normalised, it would no longer match the ten raw answers
    records = [VQARecord(1, None, "q?", [answer] * 10, "other", "what"),
               VQARecord(2, None, "q?", ["yes"] * 10, "yes/no", "is")]
    scores, preds = score_answers(records=records, raw=[f" {answer}\n", "no"])
    assert scores["overall"] == 50.0 and scores["per_answer_type"] == {"other": 100.0, "yes/no": 0.0}
    assert preds[0]["accuracy"] == 1.0 and preds[0]["prediction"] == answer
    assert preds[0]["normalized_prediction"] == normalize_answer(answer) and preds[0]["raw_prediction"] == f" {answer}\n"
    # the stored prediction re-scores to the stored accuracy (what `score` on predictions.jsonl does)
    assert question_accuracy(preds[0]["prediction"], preds[0]["answers"]) == preds[0]["accuracy"]


def test_jsonl_records_split_on_newline_only(tmp_path):
    answer = "line\u2028separator\u0085next\x1cfile"  # valid inside a JSON string; str.splitlines() splits on each
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"question_id": 1, "answer": answer}, ensure_ascii=False) + "\n"
                     + json.dumps({"question_id": 2, "answer": "b"}) + "\n", encoding="utf-8")
    assert read_predictions(preds) == {1: answer, 2: "b"}
    anns = tmp_path / "a.jsonl"
    anns.write_text(json.dumps({"question_id": 1, "answers": [answer]}, ensure_ascii=False) + "\r\n", encoding="utf-8")
    assert read_annotations(anns)[0]["answers"] == [answer]  # a CRLF file still reads


def test_dataset_jsonl_reader_splits_on_newline_only(tmp_path):
    from PIL import Image

    from toolkit.data.sources import load_vqa

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    question = "what is\u2028this?"
    (tmp_path / "d.jsonl").write_text(
        json.dumps({"question_id": 1, "image": "a.png", "question": question, "answers": ["x\u2028y"]},
                   ensure_ascii=False) + "\n", encoding="utf-8")
    ds = load_vqa(str(tmp_path / "d.jsonl"))
    assert len(ds) == 1 and ds[0].question == question and ds[0].answers == ["x\u2028y"]
