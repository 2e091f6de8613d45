"""The README's real-data recipes against lmms-lab/VQAv2 as published (tests/data/conftest.py), offline.

lmms-lab/VQAv2 has validation, testdev and test, no train, and the test splits withhold their answers: the
recipes train and evaluate on image-disjoint parts of validation (`--split validation --holdout F`). Read from a
downloaded folder and, as `--dataset lmms-lab/VQAv2`, from the cache a download leaves (HF_HUB_OFFLINE=1); a
missing split, a split without answers and a loading-script dataset (HuggingFaceM4/VQAv2) are one line, exit 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.data.sources import load_vqa
from toolkit.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
HOLDOUT = 0.25
MISSING_TRAIN = ("split: 'train' is not in {where} (it has validation, testdev, test); train and evaluate on "
                 "image-disjoint parts of validation with --split validation --holdout 0.1")


@pytest.fixture(scope="module")
def datasets_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("datasets-cache")


@pytest.fixture(autouse=True)
def _own_datasets_cache(datasets_cache, monkeypatch):
    """load_dataset prepares Arrow files of a folder in the datasets cache: a temporary one, not the user's."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(datasets_cache))


def _offline_from(monkeypatch, hf_home: Path):
    """This process as one started with HF_HOME=hf_home HF_HUB_OFFLINE=1 (both libraries read them at import)."""
    import datasets
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(hf_home / "datasets"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))


def _one_line_error(code, err) -> str:
    assert code == 2, err
    line = err.strip()
    assert line.startswith("error: ") and "\n" not in line and "Traceback" not in line, err
    return line.removeprefix("error: ")


def _train_args(dataset, *extra):
    return ["train", "--model", "demo", "--dataset", str(dataset), "--ratio", "1:4:1", "--budget-rank", "4",
            "--max-steps", "2", "--batch-size", "2", "--no-progress", *extra]


# ------------------------------------------------------------------------------------------ records


def test_the_published_files_are_those_of_the_hub_repo(vqav2_folder):
    files = sorted(str(p.relative_to(vqav2_folder)) for p in vqav2_folder.rglob("*")
                   if p.is_file() and ".cache" not in p.parts)
    assert files == [".gitattributes", "README.md", "data/test-00000-of-00001.parquet",
                     "data/testdev-00000-of-00001.parquet", "data/validation-00000-of-00001.parquet"]
    card = (vqav2_folder / "README.md").read_text()
    assert "- split: validation\n    path: data/validation-*" in card and "num_examples: 120" in card


def test_validation_records_come_out_as_published(vqav2_folder, vqav2_hub):
    data = load_vqa(str(vqav2_folder), split="validation")
    published = {r["question_id"]: r for r in vqav2_hub.rows["validation"]}
    assert len(data) == data.info.source_size == len(published) == 120
    assert data.info.kind == "datasets" and data.info.columns == {
        "question_id": "question_id", "image": "image", "question": "question", "answers": "answers",
        "answer_type": "answer_type", "question_type": "question_type", "image_id": "image_id"}
    for record in (data[0], data[4], data[119]):
        row = published[record.question_id]
        assert record.question == row["question"]
        assert record.answers == [a["answer"] for a in row["answers"]] and len(record.answers) == 10
        assert record.answer == row["multiple_choice_answer"]
        assert (record.answer_type, record.question_type) == (row["answer_type"], row["question_type"])
        assert record.image_id == f"image_id:{row['image_id']}" and record.image.mode == "RGB"
        assert record.image.size == (64, 64)
    assert {r.answer_type for r in data} == {"number", "yes/no", "other"}


def test_holdout_parts_share_no_image_and_cover_the_split(vqav2_folder):
    whole = load_vqa(str(vqav2_folder), split="validation").identities()
    train = load_vqa(str(vqav2_folder), split="validation", holdout=HOLDOUT).identities()
    held = load_vqa(str(vqav2_folder), split="validation", holdout=HOLDOUT, part="holdout").identities()
    assert train and held
    assert not {i for _, i in train} & {i for _, i in held}
    assert sorted(train + held) == sorted(whole)
    # each image's three questions stay together; --limit picks within a part, never across it
    assert all(len([q for q, i in held if i == image]) == 3 for image in {i for _, i in held})
    some = load_vqa(str(vqav2_folder), split="validation", holdout=HOLDOUT, limit=8, sample_seed=4).identities()
    assert len(some) == 8 and set(some) <= set(train)


# ------------------------------------------------------------------------------------------ refusals


def test_missing_split_names_the_splits_and_the_holdout_recipe(vqav2_folder, run_cli, tmp_path):
    code, _, err = run_cli(*_train_args(vqav2_folder, "--output", str(tmp_path / "a")))  # --split defaults to train
    assert _one_line_error(code, err).startswith(MISSING_TRAIN.format(where=f"'{vqav2_folder}'"))
    assert not (tmp_path / "a").exists()
    code, _, err = run_cli("evaluate", "--base", "demo", "--dataset", str(vqav2_folder), "--split", "val")
    assert _one_line_error(code, err).startswith(f"split: 'val' is not in '{vqav2_folder}' (it has validation, "
                                                 "testdev, test); train and evaluate on image-disjoint parts")


@pytest.mark.parametrize("split", ["testdev", "test"])
def test_splits_without_answers_are_refused_for_training_and_evaluation(vqav2_folder, run_cli, tmp_path, split):
    expected = (f"split: '{split}' of '{vqav2_folder}' has no answers in any of its {{n}} records (withheld, as in "
                f"VQAv2's test and test-dev, which only the EvalAI server scores), so it can be neither trained on "
                f"nor scored; use a split with answers: train and evaluate on image-disjoint parts of validation "
                f"with --split validation --holdout 0.1")
    code, _, err = run_cli(*_train_args(vqav2_folder, "--split", split, "--output", str(tmp_path / "a")))
    n = {"testdev": 30, "test": 36}[split]
    assert _one_line_error(code, err).startswith(expected.format(n=n))
    code, _, err = run_cli("evaluate", "--base", "demo", "--dataset", str(vqav2_folder), "--split", split,
                           "--limit", "5")
    assert _one_line_error(code, err).startswith(expected.format(n=5))


def test_a_loading_script_dataset_is_one_line(tmp_path, run_cli):
    """HuggingFaceM4/VQAv2 as published: VQAv2.py and a card, no data files; datasets 4+ runs no scripts."""
    import datasets

    folder = tmp_path / "VQAv2"
    folder.mkdir()
    (folder / "VQAv2.py").write_text("import datasets\n\n\nclass VQAv2Dataset(datasets.GeneratorBasedBuilder):\n"
                                     "    pass\n")
    (folder / "README.md").write_text("Checks with https://visualqa.org/download.html:\n")
    code, _, err = run_cli(*_train_args(folder, "--split", "train", "--output", str(tmp_path / "a")))
    assert _one_line_error(code, err) == (
        f"dataset: '{folder}' is a loading script (VQAv2.py), and the installed datasets {datasets.__version__} no "
        "longer runs loading scripts; use the parquet copy lmms-lab/VQAv2 instead, which has no train split: train "
        "and evaluate on image-disjoint parts of validation with --split validation --holdout 0.1 (train uses 90 % "
        "of its images, evaluate with the same flags scores the other 10 %)")
    other = tmp_path / "scripted"  # a script under another name, nothing else
    other.mkdir()
    (other / "loader.py").write_text("import datasets\n")
    with pytest.raises(InputError, match=r"^dataset: '.*scripted' is a loading script \(loader.py\).*; use a copy "
                                         r"in parquet or another data format, or a folder written by save_to_disk$"):
        load_vqa(str(other), split="train")


def test_a_loading_script_on_the_hub_is_one_line(hub, monkeypatch, run_cli, tmp_path):
    """`--dataset HuggingFaceM4/VQAv2` online (the local Hub): datasets finds VQAv2.py and refuses to run it."""
    import datasets
    from huggingface_hub import HfApi

    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", hub.url)
    token = hub.add_token("hf_local_m4write_0123456789ab", orgs=("HuggingFaceM4",))
    api = HfApi(endpoint=hub.url, token=token)
    api.create_repo("HuggingFaceM4/VQAv2", repo_type="dataset")
    api.upload_file(path_or_fileobj=b"import datasets\n", path_in_repo="VQAv2.py", repo_id="HuggingFaceM4/VQAv2",
                    repo_type="dataset")
    code, _, err = run_cli(*_train_args("HuggingFaceM4/VQAv2", "--split", "train", "--output", str(tmp_path / "a")))
    assert _one_line_error(code, err).startswith("dataset: 'HuggingFaceM4/VQAv2' is a loading script (VQAv2.py), "
                                                 "and the installed datasets")


def test_some_records_without_answers_are_refused_by_count(tmp_path):
    from datasets import Dataset, Image

    rows = [{"question_id": i, "image": {"bytes": _png(), "path": None}, "question": "q?",
             "answers": [] if i == 1 else ["yes"] * 10} for i in range(3)]
    (tmp_path / "data").mkdir()
    Dataset.from_list(rows).cast_column("image", Image()).to_parquet(
        str(tmp_path / "data" / "validation-00000-of-00001.parquet"))
    with pytest.raises(InputError, match="1 of 3 records .* have no answers"):
        load_vqa(str(tmp_path), split="validation")


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ the Hub id, offline


@pytest.mark.slow  # the session's download runs `datasets` in a fresh process
def test_the_hub_id_resolves_from_the_cache_a_download_left(vqav2_cache, vqav2_hub, vqav2_folder, monkeypatch,
                                                             run_cli, tmp_path):
    assert (vqav2_cache / "hub" / "datasets--lmms-lab--VQAv2" / "refs" / "main").read_text() == vqav2_hub.revision
    assert [p.name for p in (vqav2_cache / "datasets" / "lmms-lab___vq_av2" / "default" / "0.0.0").iterdir()
            if p.is_dir()] == [vqav2_hub.revision]
    _offline_from(monkeypatch, vqav2_cache)
    data = load_vqa("lmms-lab/VQAv2", split="validation", holdout=HOLDOUT, limit=10)
    assert data.info.revision == vqav2_hub.revision and data.info.source_size == 120
    assert data.identities() == load_vqa(str(vqav2_folder), split="validation", holdout=HOLDOUT, limit=10).identities()
    code, _, err = run_cli(*_train_args("lmms-lab/VQAv2", "--output", str(tmp_path / "a")))
    assert _one_line_error(code, err).startswith(MISSING_TRAIN.format(where="lmms-lab/VQAv2"))
    with pytest.raises(InputError, match=r"^split: 'testdev' of lmms-lab/VQAv2 has no answers in any of its 30 "):
        load_vqa("lmms-lab/VQAv2", split="testdev")
    with pytest.raises(InputError, match=r"^dataset: 'someone/VQAv3' is not a local file or folder, the "
                                         r"Hugging Face Hub is unreachable \(offline\), and the datasets cache .* "
                                         r"holds no copy"):
        load_vqa("someone/VQAv3", split="validation")
    # a machine without network that never set HF_HUB_OFFLINE: the Hub does not answer, the cache is used all the same
    import datasets
    import huggingface_hub.constants as constants

    import toolkit.calculator.structure as structure

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(structure, "_hub_reachable", lambda timeout=3.0: False)
    assert load_vqa("lmms-lab/VQAv2", split="validation", limit=3).info.revision == vqav2_hub.revision
    assert datasets.config.HF_HUB_OFFLINE is False  # datasets' offline switch was set for the call only


# ------------------------------------------------------------------------------------------ the recipes, for real


@pytest.mark.slow
@pytest.mark.training
def test_train_and_evaluate_on_image_disjoint_parts_of_validation(vqav2_folder, run_cli, tmp_path):
    """The README's recipe on the demo model: train on validation --holdout, evaluate on the held-out images."""
    out = tmp_path / "adapter"
    code, _, err = run_cli(*_train_args(vqav2_folder, "--split", "validation", "--holdout", str(HOLDOUT), "--limit",
                                        "8", "--output", str(out)))
    assert code == 0, err
    trained = json.loads((out / "cmba.json").read_text())["dataset"]
    assert (trained["split"], trained["size"], trained["holdout"]) == ("validation", 8, HOLDOUT)
    assert trained["part"] == "train"
    code, out_text, err = run_cli("evaluate", "--adapter", str(out), "--dataset", str(vqav2_folder), "--split",
                                  "validation", "--holdout", str(HOLDOUT), "--limit", "8", "--batch-size", "4",
                                  "--json")
    assert code == 0, err
    doc = json.loads(out_text)
    assert doc["dataset"]["part"] == "holdout" and doc["scores"]["n"] == 8
    assert set(doc["scores"]["per_answer_type"]) <= {"number", "yes/no", "other"}
    # the trained part is refused as contaminated
    code, _, err = run_cli("evaluate", "--adapter", str(out), "--dataset", str(vqav2_folder), "--split", "validation",
                           "--limit", "120")
    assert _one_line_error(code, err).startswith("evaluation: 8 of 120 questions (and ")


@pytest.mark.slow
@pytest.mark.training
def test_the_readme_commands_run_offline_as_written(vqav2_cache, tmp_path):
    """`python -m toolkit train/evaluate --dataset lmms-lab/VQAv2 --split validation --holdout ...` in fresh processes
    that have only the cache (HF_HUB_OFFLINE=1)."""
    env = _offline(vqav2_cache, tmp_path)
    out = tmp_path / "adapters" / "vqav2"
    train = [sys.executable, "-m", "toolkit", *_train_args("lmms-lab/VQAv2", "--split", "validation", "--holdout",
                                                          str(HOLDOUT), "--limit", "8", "--output", str(out))]
    done = subprocess.run(train, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    evaluate = [sys.executable, "-m", "toolkit", "evaluate", "--adapter", str(out), "--dataset", "lmms-lab/VQAv2",
                "--split", "validation", "--holdout", str(HOLDOUT), "--limit", "8", "--json"]
    done = subprocess.run(evaluate, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["dataset"]["id"] == "lmms-lab/VQAv2"


def _offline(hf_home: Path, tmp_path: Path) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    return env | {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "CMBA_ADAPTERS_DIR": str(tmp_path / "adapters"),
                  "CMBA_JOBS_DIR": str(tmp_path / "jobs")}
