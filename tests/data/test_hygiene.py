"""Data hygiene: image ids per source, identities without decoding, the image-grouped hold-out, and the
trained-on record with its overlap check (the README recipe that evaluates on its own training questions)."""

from __future__ import annotations

import io
import json

import pytest

from toolkit.data.hygiene import (
    Overlap,
    TrainedOn,
    check_clean,
    holdout_fraction_of,
    overlap,
    trained_on,
)
from toolkit.data.sources import load_vqa
from toolkit.errors import InputError

SPEC = "synthetic:shapes?n=400&seed=2"


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _images(ds) -> set[str]:
    return {image_id for _, image_id in ds.identities()}


def _questions(ds) -> set[str]:
    return {qid for qid, _ in ds.identities()}


# ----------------------------------------------------------------------------------- image ids


def test_synthetic_image_ids_name_the_scene_and_splits_share_none():
    train, val = load_vqa(SPEC, split="train"), load_vqa(SPEC, split="validation")
    assert len(_images(train)) == 400 and _images(train).isdisjoint(_images(val))
    records = train[:5]
    assert [(str(r.question_id), r.image_id) for r in records] == train.identities()[:5]
    assert records[0].image_id == "synthetic:shapes?seed=2/train/0"
    # the same id renders the same picture whatever n (the scene is a function of seed, split and key)
    bigger = load_vqa("synthetic:shapes?n=800&seed=2", split="train")
    assert bigger[3].image_id == records[3].image_id and _png(bigger[3].image) == _png(records[3].image)


def test_synthetic_identities_do_not_render(monkeypatch):
    import toolkit.data.synthetic as synthetic

    def no_render(*args, **kwargs):
        raise AssertionError("identities() rendered an image")

    monkeypatch.setattr(synthetic, "render", no_render)
    ds = load_vqa("synthetic:shapes?n=20000", split="train", holdout=0.1, limit=5000)
    ids = ds.identities()
    assert len(ids) == 5000 and len({i for _, i in ids}) == 5000


@pytest.fixture
def jsonl_folder(tmp_path):
    """train.jsonl and validation.jsonl over one image folder; two train questions share image 0."""
    from toolkit.data.synthetic import SyntheticShapes

    gen = SyntheticShapes(n=8, seed=5)
    (tmp_path / "img").mkdir()
    for i in range(8):
        gen.record(i)["image"].save(tmp_path / "img" / f"{i}.png")

    def line(qid, image, i):
        r = gen.record(i)
        return json.dumps({"question_id": qid, "image": image, "question": r["question"], "answers": r["answers"]})

    train = [line(0, "img/0.png", 0), line(1, "./img/../img/0.png", 0)] + [line(i, f"img/{i}.png", i) for i in (2, 3, 4)]
    val = [line(100 + i, f"img/{i}.png", i) for i in (4, 5, 6, 7)]
    (tmp_path / "train.jsonl").write_text("\n".join(train) + "\n")
    (tmp_path / "validation.jsonl").write_text("\n".join(val) + "\n")
    return tmp_path


def test_jsonl_image_ids_are_normalised_paths_and_survive_deleted_images(jsonl_folder):
    train = load_vqa(str(jsonl_folder), split="train")
    ids = train.identities()
    assert ids[0] == ("0", "img/0.png") and ids[1] == ("1", "img/0.png")  # two questions, one image
    assert train[1].image_id == "img/0.png"
    for f in (jsonl_folder / "img").iterdir():  # identities() reads no image file
        f.unlink()
    assert train.identities() == ids
    with pytest.raises(InputError, match="image: cannot read"):
        train[0]


def test_jsonl_overlap_compares_paths_not_question_numbers(jsonl_folder):
    train = load_vqa(str(jsonl_folder), split="train")
    val = load_vqa(str(jsonl_folder / "validation.jsonl"), image_dir=str(jsonl_folder))
    found = overlap(trained_on(train), val.identities())
    assert (found.questions, found.eval_questions, found.images, found.eval_images) == (0, 4, 1, 4)
    assert found.example_images == ("img/4.png",)
    # the same JSONL numbered from 0 again: ids collide but the images differ, so the questions are new
    (jsonl_folder / "renumbered.jsonl").write_text("".join(
        json.dumps({**json.loads(x), "question_id": n}) + "\n"
        for n, x in enumerate((jsonl_folder / "validation.jsonl").read_text().splitlines())))
    renumbered = load_vqa(str(jsonl_folder / "renumbered.jsonl"))
    assert _questions(renumbered) & _questions(train)
    assert overlap(trained_on(train), renumbered.identities()).questions == 0


def _saved_dataset(path, *, with_path: bool, image_id_column: bool = False):
    from datasets import Dataset, Features, Image, List, Value

    from toolkit.data.synthetic import SyntheticShapes

    gen = SyntheticShapes(n=4, seed=7, split="validation")
    pictures = [_png(gen.record(i)["image"]) for i in range(4)]
    rows = {"question_id": [], "question": [], "answers": [], "image": []}
    if image_id_column:
        rows["image_id"] = []
    for q in range(6):  # questions 0-1 on image 0, 2-3 on image 1, 4 on image 2, 5 on image 3
        k = [0, 0, 1, 1, 2, 3][q]
        rows["question_id"].append(700 + q)
        rows["question"].append(f"question {q}?")
        rows["answers"].append(["yes"] * 10)
        rows["image"].append({"bytes": pictures[k], "path": f"coco/{k}.png" if with_path else None})  # datasets keeps the basename
        if image_id_column:
            rows["image_id"].append(9000 + k)
    features = {"question_id": Value("int64"), "question": Value("string"), "answers": List(Value("string")),
                "image": Image()}
    if image_id_column:
        features["image_id"] = Value("int64")
    Dataset.from_dict(rows, features=Features(features)).save_to_disk(str(path))
    return pictures


@pytest.mark.parametrize("with_path, image_id_column, first", [
    (False, False, "sha1:"),
    (True, False, "0.png"),
    (True, True, "image_id:9000"),
])
def test_datasets_image_ids_from_column_path_or_bytes(tmp_path, with_path, image_id_column, first):
    import hashlib

    pictures = _saved_dataset(tmp_path / "ds", with_path=with_path, image_id_column=image_id_column)
    ds = load_vqa(str(tmp_path / "ds"), split="validation")
    ids = ds.identities()
    assert [q for q, _ in ids] == [str(700 + q) for q in range(6)]
    assert ids[0][1].startswith(first) and ids[0][1] == ids[1][1] and ids[2][1] == ids[3][1]
    assert len({i for _, i in ids}) == 4
    if first == "sha1:":
        assert ids[0][1] == "sha1:" + hashlib.sha1(pictures[0]).hexdigest()
    assert [r.image_id for r in ds] == [i for _, i in ids]  # records carry the same id as identities()


def test_datasets_holdout_keeps_questions_of_one_image_together(tmp_path):
    _saved_dataset(tmp_path / "ds", with_path=False)
    kept = {part: load_vqa(str(tmp_path / "ds"), split="validation", holdout=0.5, part=part)
            for part in ("train", "holdout")}
    for part, ds in kept.items():
        ids = ds.identities()
        assert all(holdout_fraction_of(i) < 0.5 for _, i in ids) == (part == "holdout")
    assert _images(kept["train"]).isdisjoint(_images(kept["holdout"]))
    assert len(kept["train"]) + len(kept["holdout"]) == 6


# ----------------------------------------------------------------------------------- hold-out


def test_train_and_holdout_parts_are_disjoint_and_cover_the_split():
    train = load_vqa(SPEC, split="train", holdout=0.25)
    held = load_vqa(SPEC, split="train", holdout=0.25, part="holdout")
    whole = load_vqa(SPEC, split="train")
    assert _images(train).isdisjoint(_images(held)) and _questions(train).isdisjoint(_questions(held))
    assert _images(train) | _images(held) == _images(whole) and len(train) + len(held) == 400
    assert 60 < len(held) < 140  # about a quarter of 400 images
    assert (held.info.holdout, held.info.part, train.info.part) == (0.25, "holdout", "train")
    assert held.info.source_size == 400 and held.info.to_dict()["holdout"] == 0.25
    assert whole.info.holdout is None and whole.info.part is None


def test_holdout_is_stable_across_limits_and_sample_seeds():
    held = _images(load_vqa(SPEC, split="train", holdout=0.25, part="holdout"))
    for limit, seed in ((10, 0), (50, 0), (50, 3), (None, 7)):
        train = load_vqa(SPEC, split="train", holdout=0.25, limit=limit, sample_seed=seed)
        sub = load_vqa(SPEC, split="train", holdout=0.25, part="holdout", limit=limit, sample_seed=seed)
        assert _images(train).isdisjoint(held) and _images(sub) <= held
        assert len(train) == (limit or len(train)) and train.info.limit == limit
    assert holdout_fraction_of("img/0.png") == holdout_fraction_of("img/0.png")
    assert 0 <= holdout_fraction_of("img/0.png") < 1 and holdout_fraction_of("img/0.png") != holdout_fraction_of("img/1.png")


def test_without_holdout_the_limit_subset_is_unchanged():
    import random

    ds = load_vqa(SPEC, split="train", limit=30, sample_seed=4)
    expected = sorted(random.Random(4).sample(range(400), 30))
    assert [q for q, _ in ds.identities()] == [f"shapes-2-train-{i}" for i in expected]


@pytest.mark.parametrize("kwargs, match", [
    ({"holdout": 0}, "holdout: must be a fraction"),
    ({"holdout": 1.0}, "holdout: must be a fraction"),
    ({"holdout": "0.1"}, "holdout: must be a fraction"),
    ({"holdout": 0.1, "part": "test"}, "part: must be one of train, holdout"),
    ({"part": "holdout"}, "part: 'holdout' needs a holdout"),
    ({"holdout": 1e-9, "part": "holdout"}, "holdout: the holdout part .* is empty"),
])
def test_bad_holdout_and_part_are_one_line(kwargs, match):
    with pytest.raises(InputError, match=match) as err:
        load_vqa("synthetic:shapes?n=20", split="train", **kwargs)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------- trained-on and overlap


def test_trained_on_round_trips_and_its_digest_catches_edits():
    seen = trained_on(load_vqa(SPEC, split="train", limit=25))
    assert len(seen.question_ids) == 25 and len(seen.image_ids) == 25 and len(seen.digest) == 64
    back = TrainedOn.from_json(seen.to_json())
    assert back == seen and back.digest == seen.digest
    assert seen.summary() == {"questions": 25, "images": 25, "digest": seen.digest}
    doc = json.loads(seen.to_json())
    doc["question_ids"] = doc["question_ids"][1:]
    with pytest.raises(InputError, match="digest: .* does not match"):
        TrainedOn.from_json(json.dumps(doc))
    with pytest.raises(InputError, match="trained_on: not JSON"):
        TrainedOn.from_json("{oops")
    assert TrainedOn(question_ids=("b", "a", "a")).question_ids == ("a", "b")  # order and repeats do not matter
    assert TrainedOn(question_ids=("b", "a")).digest == TrainedOn(question_ids=("a", "b")).digest


def test_readme_recipe_evaluates_on_its_own_training_questions():
    """Train on validation limit 20, evaluate on validation limit 40, same sample seed: nested subsets."""
    spec = "synthetic:shapes?n=2000"
    seen = trained_on(load_vqa(spec, split="validation", limit=20, sample_seed=0))
    found = overlap(seen, load_vqa(spec, split="validation", limit=40, sample_seed=0).identities())
    assert (found.questions, found.eval_questions, found.images, found.eval_images) == (20, 40, 20, 40)
    assert found.question_fraction == 0.5 and found.contaminated
    with pytest.raises(InputError) as err:
        check_clean(found, allow_contaminated=False)
    msg = str(err.value)
    assert msg.startswith("evaluation: 20 of 40 questions (and 20 of 40 images) were trained on by this adapter")
    assert "--holdout" in msg and "--allow-contaminated" in msg and "\n" not in msg
    assert check_clean(found, allow_contaminated=True).startswith("contaminated: 20 of 40 questions")
    # the fixes: another split, or the hold-out of the same split
    assert check_clean(overlap(seen, load_vqa(spec, split="test", limit=40).identities()),
                       allow_contaminated=False) is None
    seen = trained_on(load_vqa(spec, split="validation", holdout=0.1, limit=200))
    clean = overlap(seen, load_vqa(spec, split="validation", holdout=0.1, part="holdout").identities())
    assert not clean.contaminated and clean.eval_questions > 100
    assert check_clean(clean, allow_contaminated=False) is None


def test_overlap_counts_distinct_questions_and_images():
    seen = TrainedOn(question_ids=("1", "2", "3"), image_ids=("a", "b"), pairs=(("1", "a"), ("2", "a"), ("3", "b")))
    found = overlap(seen, [(1, "a"), (1, "a"), (4, "a"), (5, "c"), (6, "d"), (3, None)])
    # 1 (same image) and 3 (image unknown) were trained on; 4 is new but on trained image "a"
    assert (found.eval_questions, found.questions, found.eval_images, found.images) == (5, 2, 3, 1)
    assert found.example_questions == ("1", "3") and found.example_images == ("a",)
    assert found.to_dict()["image_fraction"] == pytest.approx(1 / 3)
    only_images = overlap(seen, [(10, "b"), (11, "z")])
    assert (only_images.questions, only_images.images) == (0, 1)
    with pytest.raises(InputError, match=r"0 of 2 questions \(and 1 of 2 images\)"):
        check_clean(only_images, allow_contaminated=False)
    empty = overlap(seen, [])
    assert not empty.contaminated and empty.question_fraction == 0.0
    with pytest.raises(InputError, match="overlap: more overlapping"):
        Overlap(eval_questions=1, eval_images=1, questions=2, images=0)
