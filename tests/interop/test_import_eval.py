"""`import-eval`: lmms-eval's `--log_samples` files become evaluations that `compare` pools by seed and image.

The samples files are written here from lmms-eval's documented format (docs/getting-started/commands.md, "Log
Samples Output Format"; lmms_eval/loggers/evaluation_tracker.py `save_results_samples`): lmms-eval 0.4+ lines
(`doc_id`, `input`, `target`, `filtered_resps`, `doc_hash`, the task's `exact_match`; no `doc`) read against the
split the task read, and lines that still carry `doc` (lmms-eval 0.3). The adapters are complete run folders
(cmba.json + safetensors weights) of a small study: two ratios, two seeds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from toolkit import runs
from toolkit.errors import InputError
from toolkit.evaluation import compare
from toolkit.interop.lmms_eval import import_samples

ROOT = Path(__file__).resolve().parents[2]
TASK = "vqav2_val"
PROMPT = "\nAnswer the question using a single word or phrase."
N = 12
QUESTIONS = [{"question_id": 1000 + i, "image_id": 50 + i // 2, "question": f"what is on image {i // 2} (q{i})?",
              "answers": [{"answer": "t-shirt", "answer_confidence": "yes", "answer_id": k} for k in range(10)]
              if i % 3 == 0 else [{"answer": a, "answer_id": k} for k, a in enumerate(["2"] * 6 + ["two"] * 4)],
              "answer_type": "other" if i % 3 == 0 else "number", "question_type": "what"}
             for i in range(N)]
"""two questions per image, as in VQAv2"""


def make_adapter(store: Path, name: str, *, ratio=(1, 1, 1), seed=0) -> Path:
    """A complete adapter folder as `train` leaves it (import reads cmba.json and never loads the weights)."""
    import torch
    from safetensors.torch import save_file

    folder = store / name
    folder.mkdir(parents=True)
    save_file({"base_model.model.x.lora_A.weight": torch.ones(2, 2)}, str(folder / runs.ADAPTER_WEIGHTS))
    runs.write_adapter_doc(folder, runs.AdapterDoc(
        name=name, base_model={"id": "demo", "model_type": "llava"},
        allocation={"model": "demo", "mode": "rank", "ratio": list(ratio), "budget": 1000, "total": 1000,
                    "components": {c: {"rank": 4} for c in ("vision", "projector", "language")}},
        training={"seed": seed, "lr": 0.001, "max_steps": 10}, dataset={"id": "synthetic:shapes", "split": "train"}))
    return folder


def samples_file(path: Path, answers: list[str], *, with_doc: bool = False, questions=QUESTIONS) -> Path:
    """What lmms-eval writes for vqav2_val (0.4+: no doc; `with_doc`: a 0.3-style line that keeps it)."""
    with open(path, "w", encoding="utf-8") as f:
        for i, (q, a) in enumerate(zip(questions, answers, strict=True)):
            line = {"doc_id": i, "input": q["question"] + PROMPT, "target": "answer", "filtered_resps": a,
                    "doc_hash": f"{i:064x}", "exact_match": 1.0 if a == "2" else 0.0,
                    "token_counts": [None]}
            if with_doc:
                line["doc"] = q
                line["filtered_resps"] = [a]  # the pre-0.4 layout keeps the list
            f.write(json.dumps(line) + "\n")
    return path


def dataset_jsonl(tmp_path: Path, questions=QUESTIONS) -> Path:
    """The split the task read, as a local JSONL dataset (lmms-lab/VQAv2's columns; images next to it)."""
    from PIL import Image

    folder = tmp_path / "vqav2"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    with open(folder / "validation.jsonl", "w") as f:
        for q in questions:
            image = folder / "images" / f"{q['image_id']}.png"
            if not image.exists():
                Image.new("RGB", (8, 8), (q["image_id"], 0, 0)).save(image)
            f.write(json.dumps({**q, "image": f"images/{q['image_id']}.png"}) + "\n")
    return folder


def answers_for(correct: int) -> list[str]:
    """`correct` questions answered as the humans did, the rest wrong; the raw "t-shirt" must stay unnormalised."""
    return [("t-shirt" if i % 3 == 0 else "2") if i < correct else "no" for i in range(N)]


def test_lines_without_doc_are_matched_to_the_split_and_scored_officially(tmp_path):
    store = tmp_path / "adapters"
    adapter = make_adapter(store, "r1-1-1-s0")
    data = dataset_jsonl(tmp_path)
    path = samples_file(tmp_path / "20260101_000000_samples_vqav2_val.jsonl", answers_for(9))
    doc = import_samples(adapter, path, dataset=str(data))
    assert doc["tag"] == f"lmms-eval__{TASK}__n{N}" and Path(doc["path"]) == adapter / "eval" / doc["tag"]
    preds = runs.read_predictions(adapter, doc["tag"])
    assert [p.question_id for p in preds] == [str(q["question_id"]) for q in QUESTIONS]
    assert [p.image_id for p in preds] == [f"image_id:{q['image_id']}" for q in QUESTIONS]  # load_vqa's
    # the official rule: "t-shirt" against ten unanimous "t-shirt" is 1 (normalised it would be "t shirt");
    # "2" against six "2" and four "two": answers disagree, so both sides are normalised: 1.0
    assert [p.accuracy for p in preds[:9]] == [1.0] * 9 and [p.accuracy for p in preds[9:]] == [0.0] * 3
    assert doc["scores"]["overall"] == 75.0 and doc["scores"]["n"] == N
    assert preds[1].extra["doc_id"] == 1 and preds[1].extra["lmms_eval_metrics"] == {"exact_match": 1.0}
    result = runs.read_evaluation(adapter, doc["tag"])
    assert result.extra["lmms_eval"]["task"] == TASK and result.settings["harness"] == "lmms-eval"

    with pytest.raises(InputError, match="^dataset: .* holds no doc .* pass --dataset"):
        import_samples(adapter, path)
    shuffled = dataset_jsonl(tmp_path / "other", questions=QUESTIONS[1:] + QUESTIONS[:1])
    with pytest.raises(InputError, match="^samples: .* doc_id 0: its prompt does not contain row 0's question"):
        import_samples(adapter, path, dataset=str(shuffled))


def test_study_of_imports_is_compared_with_images_resampled_together(tmp_path, monkeypatch):
    """Four adapters (two ratios x two seeds) scored by lmms-eval: compare pools them by seed on the imported
    tag, which its eval-set selector lists, and clusters the questions by image."""
    store = tmp_path / "adapters"
    for ratio, seed, correct in (((1, 1, 1), 0, 6), ((1, 1, 1), 1, 7), ((1, 4, 1), 0, 10), ((1, 4, 1), 1, 11)):
        name = f"r{'-'.join(map(str, ratio))}-s{seed}"
        adapter = make_adapter(store, name, ratio=ratio, seed=seed)
        path = samples_file(tmp_path / f"{name}_samples_{TASK}.jsonl", answers_for(correct), with_doc=True)
        doc = import_samples(adapter, path)  # lines with doc: no dataset needed
    tag = doc["tag"]
    rows = compare.scan(store).rows
    assert compare.choices(rows, "eval_tag") == [tag]
    images = compare.image_ids(next(r for r in rows if r["name"] == "r1-4-1-s1"))
    assert len(images) == N and len(set(images.values())) == N // 2  # two questions per image
    analysis = compare.analyze(rows, baseline="1:1:1", dataset=tag)
    assert {g.ratio: len(g.seeds) for g in analysis.groups} == {"1:1:1": 2, "1:4:1": 2}
    assert len(analysis.comparisons) == 1 and analysis.eval_tag == tag
    assert {r["accuracy"] for r in analysis.rows} == {50.0, 58.33, 83.33, 91.67}

    # the Compare page offers the imported eval set
    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(store))
    at = AppTest.from_file(str(ROOT / "app_pages" / "compare.py"), default_timeout=60)
    at.run()
    assert not at.exception and at.selectbox(key="cmp_dataset").options == [tag]


def test_other_questions_than_the_study_are_refused(tmp_path):
    store = tmp_path / "adapters"
    first, second = make_adapter(store, "a-s0"), make_adapter(store, "a-s1", seed=1)
    import_samples(first, samples_file(tmp_path / f"samples_{TASK}.jsonl", answers_for(5), with_doc=True))
    moved = [{**q, "question_id": q["question_id"] + (100 if i == 0 else 0)} for i, q in enumerate(QUESTIONS)]
    other = samples_file(tmp_path / f"b_samples_{TASK}.jsonl", answers_for(5), with_doc=True, questions=moved)
    with pytest.raises(InputError, match=r"^samples: its 12 question ids differ from the 12 of a-s0/eval/"
                                         r"lmms-eval__vqav2_val__n12 \(1 new, 1 missing\)"):
        import_samples(second, other)
    assert not (second / "eval").exists() or not runs.evaluations(second)
    import_samples(first, samples_file(tmp_path / f"c_samples_{TASK}.jsonl", answers_for(8), with_doc=True))
    assert runs.read_evaluation(first, f"lmms-eval__{TASK}__n{N}").scores["overall"] == pytest.approx(66.67)


@pytest.mark.parametrize("content, name, message", [
    ("not json\n", f"samples_{TASK}.jsonl", "error: samples: .* line 1 is not JSON"),
    ('{"input": "q"}\n', f"samples_{TASK}.jsonl", "error: samples: .* line 1 has no whole-number doc_id"),
    ('{"doc_id": 0, "filtered_resps": "a"}\n{"doc_id": 0, "filtered_resps": "b"}\n', f"samples_{TASK}.jsonl",
     "error: samples: .* line 2 repeats doc_id 0"),
    ('{"doc_id": 0, "filtered_resps": [[1.5, true]]}\n', f"samples_{TASK}.jsonl",
     "error: samples: .* filtered_resps must hold the model's text answer"),
    ("\n", f"samples_{TASK}.jsonl", "error: samples: .* holds no samples"),
    ('{"doc_id": 0, "filtered_resps": "a"}\n', "results.jsonl", "error: task: cannot be read from the file name"),
])
def test_malformed_files_are_one_line(tmp_path, content, name, message):
    import re

    adapter = make_adapter(tmp_path / "adapters", "a-s0")
    path = tmp_path / name
    path.write_text(content)
    r = subprocess.run([sys.executable, "-m", "toolkit", "import-eval", "--adapter", str(adapter), str(path)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert re.match(message, r.stderr), r.stderr
    assert not runs.evaluations(adapter)


def test_cli_imports_and_reports(tmp_path):
    adapter = make_adapter(tmp_path / "adapters", "a-s0")
    path = samples_file(tmp_path / f"samples_{TASK}.jsonl", answers_for(12))
    cli = [sys.executable, "-m", "toolkit", "import-eval", "--adapter", str(adapter), str(path)]
    r = subprocess.run([*cli, "--dataset", str(dataset_jsonl(tmp_path)), "--json"], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["scores"]["overall"] == 100.0 and doc["tag"] == f"lmms-eval__{TASK}__n{N}"
    r = subprocess.run([sys.executable, "-m", "toolkit", "import-eval", "--help"], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 0 and "--dataset" in r.stdout
