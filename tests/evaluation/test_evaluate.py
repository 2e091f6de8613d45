"""Evaluation of a trained demo adapter on CPU: batched generation, official scoring, stored results."""

from __future__ import annotations

import json

import pytest

from toolkit.cli import make_parser
from toolkit.cli.train import settings_from_args
from toolkit.errors import InputError
from toolkit.evaluation.evaluate import evaluate_adapter, evaluate_base, read_adapter
from toolkit.evaluation.scoring import normalize_answer, question_accuracy

pytestmark = pytest.mark.training  # every test uses the trained `adapter`
EVAL = "synthetic:shapes?n=200&seed=3"


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    from toolkit.training.engine import train

    out = tmp_path_factory.mktemp("eval") / "demo-1-4-1"
    args = ["train", "--model", "demo", "--dataset", "synthetic:shapes?n=64", "--ratio", "1:4:1", "--budget-rank", "4",
            "--max-steps", "4", "--batch-size", "4", "--no-progress", "--output", str(out)]
    train(settings_from_args(make_parser().parse_args(args)), log=lambda m: None)
    return out


def test_results_and_predictions_are_stored_and_consistent(adapter):
    doc = evaluate_adapter(adapter, EVAL, split="validation", limit=40, batch_size=16)
    folder = adapter / "eval" / "synthetic-shapes-n-200-seed-3__validation__n40"
    assert doc["path"] == str(folder)
    results = json.loads((folder / "results.json").read_text())
    preds = [json.loads(x) for x in (folder / "predictions.jsonl").read_text().splitlines()]
    assert results["format"] == "cmba-eval/1" and results["adapter"] == adapter.name
    assert results["dataset"] == {**results["dataset"], "id": EVAL, "split": "validation", "limit": 40, "n": 40}
    assert results["settings"]["max_new_tokens"] == 10 and results["settings"]["decoding"] == "greedy"
    assert results["settings"]["batch_size"] == 16 and "batch_size_requested" not in results["settings"]  # it fit
    assert results["questions_per_s"] > 0
    assert len(preds) == 40 and len({p["question_id"] for p in preds}) == 40
    for p in preds:  # each stored accuracy is the official one for the stored (raw, stripped) prediction
        assert p["accuracy"] == pytest.approx(question_accuracy(p["prediction"], p["answers"]))
        assert p["prediction"] == p["raw_prediction"].strip()
        assert p["normalized_prediction"] == normalize_answer(p["prediction"])  # for display only
    overall = 100 * sum(p["accuracy"] for p in preds) / len(preds)
    assert results["scores"]["overall"] == pytest.approx(overall, abs=0.01)
    assert results["scores"]["n"] == 40
    assert set(results["scores"]["per_answer_type"]) <= {"yes/no", "number", "other"}


def test_batched_generation_equals_one_question_at_a_time(adapter):
    """Left padding must not change any answer: batch 16 and batch 1 give the same predictions."""
    batched = evaluate_adapter(adapter, EVAL, split="validation", limit=24, batch_size=16)
    folder = adapter / "eval" / "synthetic-shapes-n-200-seed-3__validation__n24"
    first = (folder / "predictions.jsonl").read_text()
    single = evaluate_adapter(adapter, EVAL, split="validation", limit=24, batch_size=1)
    assert (folder / "predictions.jsonl").read_text() == first
    assert single["scores"] == batched["scores"]


def test_base_reference_and_compare_scan(adapter, tmp_path, monkeypatch):
    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(tmp_path))
    doc = evaluate_base("demo", EVAL, split="validation", limit=20)
    base = tmp_path / "base--demo"
    assert json.loads((base / "cmba.json").read_text())["kind"] == "base"
    assert doc["adapter"] is None and (base / "eval" / "synthetic-shapes-n-200-seed-3__validation__n20").is_dir()
    from toolkit.evaluation.compare import scan

    rows = scan(tmp_path).rows
    assert [r["kind"] for r in rows] == ["base"] and rows[0]["accuracy"] == doc["scores"]["overall"]


def test_bad_adapters(tmp_path, adapter):
    with pytest.raises(InputError, match="has no cmba.json"):
        read_adapter(tmp_path)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "cmba.json").write_text(json.dumps({"kind": "adapter"}))
    (pickled / "adapter_model.bin").write_bytes(b"\x80")
    with pytest.raises(InputError, match="no adapter_model.safetensors .*adapter_model.bin.*pickle"):
        read_adapter(pickled)
    with pytest.raises(InputError, match="batch-size"):
        evaluate_adapter(adapter, EVAL, batch_size=0)
    from toolkit.cli import main

    assert main(["evaluate", "--dataset", EVAL]) == 2
