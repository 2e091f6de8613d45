"""VQA data: the synthetic generator, JSONL + image folders, `datasets` sources in VQAv2's published schema,
and the prompt/label construction shared by training and evaluation."""

from __future__ import annotations

import io
import json

import pytest

from toolkit.data.sources import load_vqa, parse_columns
from toolkit.errors import InputError


def _png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_by_seed_and_split():
    a = load_vqa("synthetic:shapes?n=50&seed=3", split="train")
    b = load_vqa("synthetic:shapes?n=50&seed=3", split="train")
    for i in range(0, 50, 7):
        assert (a[i].question, a[i].answers, a[i].question_id) == (b[i].question, b[i].answers, b[i].question_id)
        assert _png_bytes(a[i].image) == _png_bytes(b[i].image)
    other_seed = load_vqa("synthetic:shapes?n=50&seed=4", split="train")
    val = load_vqa("synthetic:shapes?n=50&seed=3", split="validation")
    assert [a[i].question for i in range(50)] != [other_seed[i].question for i in range(50)]
    assert {_png_bytes(a[i].image) for i in range(50)}.isdisjoint({_png_bytes(val[i].image) for i in range(50)})


def test_synthetic_covers_every_answer_type_with_ten_answers():
    ds = load_vqa("synthetic:shapes?n=300", split="train")
    types, families = set(), set()
    for r in ds:
        assert len(r.answers) == 10
        assert r.image.size == (64, 64)
        assert r.answers.count(r.answer) == max(r.answers.count(a) for a in r.answers)  # the most frequent
        types.add(r.answer_type)
        families.add(r.question_type)
    assert types == {"yes/no", "number", "other"}
    assert {"how many", "what color is the", "where is the", "is there a"} <= families
    assert len(ds) == 300 and ds.info.size == 300 and ds.info.kind == "synthetic"


def test_synthetic_type_filter_and_answers_are_correct_for_counts():
    ds = load_vqa("synthetic:shapes?n=40&types=count", split="train")
    assert {r.answer_type for r in ds} == {"number"}
    from toolkit.data.synthetic import SyntheticShapes, scene

    gen = SyntheticShapes(n=40)
    for i in range(40):  # "how many shapes" must equal the number of objects drawn in the scene
        r = gen.record(i)
        if r["question"] == "how many shapes are there?" and "#" not in r["question_id"]:
            assert r["answer"] == str(len(scene(0, "train", i)))


@pytest.mark.parametrize("spec, field", [
    ("synthetic:cubes", "unknown synthetic dataset"),
    ("synthetic:shapes?n=zero", "must be an integer"),
    ("synthetic:shapes?n=0", "n must be in \\[1, "),
    ("synthetic:shapes?colour=red", "unknown synthetic option 'colour'"),
    ("synthetic:shapes?types=colour", "types must be among"),
])
def test_synthetic_bad_options(spec, field):
    with pytest.raises(InputError, match=field):
        load_vqa(spec)


def test_limit_is_a_deterministic_subset_independent_of_training_seed():
    full = load_vqa("synthetic:shapes?n=100", split="train")
    a = load_vqa("synthetic:shapes?n=100", split="train", limit=10)
    b = load_vqa("synthetic:shapes?n=100", split="train", limit=10)
    c = load_vqa("synthetic:shapes?n=100", split="train", limit=10, sample_seed=1)
    ids = [r.question_id for r in a]
    assert ids == [r.question_id for r in b]
    assert ids != [r.question_id for r in c]
    assert set(ids) <= {r.question_id for r in full}
    assert a.info.limit == 10 and a.info.size == 10 and a.info.source_size == 100
    with pytest.raises(InputError, match="limit"):
        load_vqa("synthetic:shapes", limit=0)
    with pytest.raises(InputError, match="split"):
        load_vqa("synthetic:shapes", split="testdev")


# ----------------------------------------------------------------------------------- JSONL


@pytest.fixture
def jsonl_dataset(tmp_path):
    from toolkit.data.synthetic import SyntheticShapes

    gen = SyntheticShapes(n=6, seed=5)
    (tmp_path / "img").mkdir()
    lines = []
    for i in range(6):
        r = gen.record(i)
        r["image"].save(tmp_path / "img" / f"{i}.png")
        lines.append({"qid": i, "img": f"img/{i}.png", "query": r["question"], "labels": r["answers"],
                      "answer_type": r["answer_type"]})
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return tmp_path, lines


def test_jsonl_with_column_mapping_and_image_folder(jsonl_dataset):
    folder, lines = jsonl_dataset
    cols = parse_columns("question_id=qid,image=img,question=query,answers=labels")
    ds = load_vqa(str(folder / "train.jsonl"), columns=cols)
    assert len(ds) == 6 and ds.info.kind == "jsonl"
    r = ds[2]
    assert r.question_id == 2 and r.question == lines[2]["query"] and r.answers == lines[2]["labels"]
    assert r.image.mode == "RGB" and r.image.size == (64, 64)
    # a folder holding <split>.jsonl works too, and the aliases find qid/img/query/labels without a mapping
    assert len(load_vqa(str(folder), split="train")) == 6


def test_missing_columns_message_lists_expected_found_and_how_to_map(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"picture_file": "a.png", "text": "q?", "gt": ["x"]}) + "\n")
    with pytest.raises(InputError) as err:
        load_vqa(str(tmp_path / "d.jsonl"))
    msg = str(err.value)
    assert "lacks the columns image, question, answers" in msg
    assert "found: gt, picture_file, text" in msg
    assert "--columns image=<column>,question=<column>,answers=<column>" in msg
    assert "\n" not in msg


def test_bad_jsonl_inputs(tmp_path, jsonl_dataset):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(InputError, match="is empty"):
        load_vqa(str(empty))
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"image": "a.png", "question": "q", "answers": ["a"]}) + "\n{not json\n")
    with pytest.raises(InputError, match="line 2 of .* is not JSON"):
        load_vqa(str(broken))
    folder, lines = jsonl_dataset
    (folder / "img" / "3.png").write_bytes(b"this is not a png")
    with pytest.raises(InputError, match="image: cannot read the image of question 3"):
        load_vqa(str(folder / "train.jsonl"))
    with pytest.raises(InputError, match="columns: unknown field 'answer'"):
        parse_columns("answer=x")


# ----------------------------------------------------------------------------------- datasets (VQAv2 schema)


def _vqav2_rows(n, with_answers=True):
    from toolkit.data.synthetic import SyntheticShapes

    gen = SyntheticShapes(n=n, seed=9, split="validation")
    rows = []
    for i in range(n):
        r = gen.record(i)
        answers = [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(r["answers"])]
        rows.append({"question_type": r["question_type"], "multiple_choice_answer": r["answer"],
                     "answers": answers if with_answers else [], "image_id": 1000 + i,
                     "answer_type": r["answer_type"], "question_id": 5000 + i, "question": r["question"],
                     "image": {"bytes": _png_bytes(r["image"]), "path": None}})
    return rows


def _lmms_features():
    from datasets import Features, Image, List, Value

    return Features({
        "question_type": Value("string"), "multiple_choice_answer": Value("string"),
        "answers": List({"answer": Value("string"), "answer_confidence": Value("string"), "answer_id": Value("int64")}),
        "image_id": Value("int64"), "answer_type": Value("string"), "question_id": Value("int64"),
        "question": Value("string"), "image": Image(),
    })


def test_vqav2_lmms_lab_layout_parquet_folder(tmp_path):
    """lmms-lab/VQAv2 on the Hub: data/validation-*.parquet with answers as a list of structs."""
    from datasets import Dataset

    rows = _vqav2_rows(8)
    ds = Dataset.from_list(rows, features=_lmms_features())
    (tmp_path / "data").mkdir()
    ds.to_parquet(str(tmp_path / "data" / "validation-00000-of-00001.parquet"))
    loaded = load_vqa(str(tmp_path), split="validation", limit=5)
    assert len(loaded) == 5 and loaded.info.kind == "datasets" and loaded.info.source_size == 8
    r = loaded[0]
    src = next(x for x in rows if x["question_id"] == r.question_id)
    assert r.answers == [a["answer"] for a in src["answers"]] and len(r.answers) == 10
    assert r.answer_type == src["answer_type"] and r.question_type == src["question_type"]
    assert r.image.size == (64, 64)
    assert loaded.info.columns["answers"] == "answers" and loaded.info.columns["image"] == "image"


def test_vqav2_image_id_column_names_the_image_and_can_be_mapped(tmp_path):
    """VQAv2 mirrors carry COCO image ids: they identify the image (hygiene) without reading its bytes."""
    from datasets import Dataset

    rows = _vqav2_rows(6)
    (tmp_path / "data").mkdir()
    Dataset.from_list(rows, features=_lmms_features()).to_parquet(
        str(tmp_path / "data" / "validation-00000-of-00001.parquet"))
    loaded = load_vqa(str(tmp_path), split="validation", limit=4, sample_seed=1)
    assert loaded.info.columns["image_id"] == "image_id"
    ids = loaded.identities()
    assert ids == [(str(r.question_id), r.image_id) for r in loaded]
    assert all(image_id == f"image_id:{int(qid) - 4000}" for qid, image_id in ids)
    assert parse_columns("image_id=coco_id") == {"image_id": "coco_id"}


def test_vqav2_sequence_layout_saved_to_disk(tmp_path):
    """HuggingFaceM4/VQAv2-style `Sequence` of answer dicts (which datasets returns as a dict of lists)."""
    from datasets import Dataset, DatasetDict, Features, Image, Sequence, Value

    features = Features({
        "question_type": Value("string"), "multiple_choice_answer": Value("string"),
        "answers": Sequence({"answer": Value("string"), "answer_confidence": Value("string"), "answer_id": Value("int64")}),
        "image_id": Value("int64"), "answer_type": Value("string"), "question_id": Value("int64"),
        "question": Value("string"), "image": Image(),
    })
    rows = _vqav2_rows(4)
    for r in rows:
        r["answers"] = {k: [a[k] for a in r["answers"]] for k in ("answer", "answer_confidence", "answer_id")}
    DatasetDict({"validation": Dataset.from_list(rows, features=features)}).save_to_disk(str(tmp_path / "m4"))
    loaded = load_vqa(str(tmp_path / "m4"), split="validation")
    assert loaded[1].answers == rows[1]["answers"]["answer"]
    with pytest.raises(InputError, match=r"split: 'train' is not in '.*m4' \(it has validation\)"):
        load_vqa(str(tmp_path / "m4"), split="train")


def test_unanswered_split_and_bad_image_bytes_are_refused(tmp_path):
    from datasets import Dataset

    (tmp_path / "t" / "data").mkdir(parents=True)
    Dataset.from_list(_vqav2_rows(3, with_answers=False), features=_lmms_features()).to_parquet(
        str(tmp_path / "t" / "data" / "testdev-00000-of-00001.parquet"))
    with pytest.raises(InputError, match="split: 'testdev' of .* has no answers in any of its 3 records"):
        load_vqa(str(tmp_path / "t"), split="testdev")
    rows = _vqav2_rows(3)
    rows[1]["image"] = {"bytes": b"\x89PNG broken", "path": None}
    (tmp_path / "b" / "data").mkdir(parents=True)
    Dataset.from_list(rows, features=_lmms_features()).to_parquet(
        str(tmp_path / "b" / "data" / "validation-00000-of-00001.parquet"))
    with pytest.raises(InputError, match="cannot read the image of question 5001"):
        load_vqa(str(tmp_path / "b"), split="validation")


def test_unknown_hub_dataset_offline_is_one_line(monkeypatch):
    import toolkit.calculator.structure as structure

    monkeypatch.setattr(structure, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(InputError, match="unreachable") as err:
        load_vqa("someone/not-a-local-dataset", split="validation")
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------- prompts and labels


def test_labels_cover_only_the_answer_and_the_prompt_matches_generation():
    from toolkit.data.prompting import INSTRUCTION, VQAFormatter
    from toolkit.training.demo import build_processor

    proc = build_processor()
    fmt = VQAFormatter(proc, "llava")
    records = list(load_vqa("synthetic:shapes?n=6"))
    assert INSTRUCTION in fmt.prompt(records[0].question)
    train = fmt.train_batch(records)
    gen = fmt.generation_batch(records)
    tok = proc.tokenizer
    for i, r in enumerate(records):
        labels = train["labels"][i]
        answer = tok(" " + r.answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert labels[labels != -100].tolist() == answer
        prompt_len = int(train["attention_mask"][i].sum()) - len(answer)
        # the prompt of a training row is exactly the (left-padded) generation prompt
        gen_ids = gen["input_ids"][i][gen["attention_mask"][i].bool()].tolist()
        assert train["input_ids"][i][:prompt_len].tolist() == gen_ids
        assert (labels[:prompt_len] == -100).all()
        assert gen_ids.count(3) == 16  # the image expanded to its 16 patch tokens
    assert train["pixel_values"].shape == (6, 3, 64, 64)
    assert gen["input_ids"][:, -1].tolist() == [gen["input_ids"][0, -1].item()] * 6  # left padding
