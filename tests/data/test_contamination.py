"""Data hygiene end to end: an adapter records what it trained on, and evaluating on it is refused.

The README's old recipe trained on `--split validation --limit N` and evaluated on the validation split with the
same sample seed: the smaller subset is a prefix of the larger one, so the "held-out" score was on training
questions. These tests train a real demo adapter and evaluate it through the CLI as a user would.
"""

from __future__ import annotations

import json

import pytest

from toolkit import runs
from toolkit.cli import main
from toolkit.data.hygiene import TrainedOn

DATA = "synthetic:shapes?n=300&seed=5"
TRAIN = ["train", "--model", "demo", "--dataset", DATA, "--ratio", "1:4:1", "--budget-rank", "4", "--max-steps", "2",
         "--batch-size", "4", "--no-progress"]


def _train(out, *extra):
    assert main([*TRAIN, "--output", str(out), *extra]) == 0
    return out


@pytest.fixture(scope="module")
def same_split(tmp_path_factory):
    """Trained on 20 validation questions (sample seed 0), as the old README recipe did."""
    return _train(tmp_path_factory.mktemp("hyg") / "val20", "--split", "validation", "--limit", "20")


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """Trained on the train part of the validation split, 30 % of its images held out."""
    return _train(tmp_path_factory.mktemp("hyg") / "holdout", "--split", "validation", "--holdout", "0.3")


def test_the_adapter_records_its_training_ids(same_split):
    doc = runs.read_adapter_doc(same_split).to_dict()
    seen = TrainedOn.from_json(runs.read_trained_on(same_split))
    assert len(seen.question_ids) == 20 and doc["dataset"]["trained_on"]["questions"] == 20
    assert doc["dataset"]["trained_on"]["digest"] == seen.digest


def test_evaluating_on_training_questions_is_refused_with_one_line(same_split, capsys):
    code = main(["evaluate", "--adapter", str(same_split), "--dataset", DATA, "--split", "validation",
                 "--limit", "40"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err
    assert "were trained on" in err and "--allow-contaminated" in err
    assert not (same_split / "eval").exists()  # refused before anything ran or was written


def test_allowed_contamination_is_marked_and_kept_apart(same_split, capsys):
    assert main(["evaluate", "--adapter", str(same_split), "--dataset", DATA, "--split", "validation", "--limit", "40",
                 "--allow-contaminated", "--batch-size", "20"]) == 0
    (tag,) = [p.name for p in (same_split / "eval").iterdir()]
    assert tag.endswith("__contaminated")
    hygiene = json.loads((same_split / "eval" / tag / "results.json").read_text())["dataset"]["hygiene"]
    assert hygiene["contaminated"] and hygiene["questions"] == 20 and hygiene["eval_questions"] == 40


def test_another_split_is_clean(same_split):
    assert main(["evaluate", "--adapter", str(same_split), "--dataset", DATA, "--split", "test", "--limit", "20",
                 "--batch-size", "20"]) == 0
    (folder,) = [p for p in (same_split / "eval").iterdir() if "__test__" in p.name]
    hygiene = json.loads((folder / "results.json").read_text())["dataset"]["hygiene"]
    assert hygiene["checked"] and not hygiene["contaminated"] and hygiene["questions"] == hygiene["images"] == 0


def test_a_same_split_holdout_shares_no_question_and_no_image(held_out):
    seen = TrainedOn.from_json(runs.read_trained_on(held_out))
    doc = runs.read_adapter_doc(held_out).to_dict()
    assert doc["dataset"]["holdout"] == 0.3 and doc["dataset"]["part"] == "train"
    assert main(["evaluate", "--adapter", str(held_out), "--dataset", DATA, "--split", "validation",
                 "--holdout", "0.3", "--batch-size", "32"]) == 0
    (folder,) = list((held_out / "eval").iterdir())
    result = json.loads((folder / "results.json").read_text())
    assert folder.name.endswith("__holdout0.3") and not folder.name.endswith("__contaminated")
    assert result["dataset"]["hygiene"]["questions"] == 0 and result["dataset"]["hygiene"]["images"] == 0
    n_eval = result["dataset"]["n"]
    assert n_eval > 0 and n_eval + len(seen.question_ids) == 300  # the two parts cover the split


def test_bad_holdout_is_one_line(capsys):
    assert main([*TRAIN, "--holdout", "1.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: holdout:") and "\n" not in err
