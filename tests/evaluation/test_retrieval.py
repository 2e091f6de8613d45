"""Generative image-text retrieval (toolkit.evaluation.retrieval): Recall@k on score matrices whose answer is
known, captions written from the synthetic scenes in the demo vocabulary, and a real run of the demo model that
stores its result in the run folder and is summarised per ratio."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit import cli, runs
from toolkit.data.synthetic import Shape, caption, caption_pairs
from toolkit.errors import InputError
from toolkit.evaluation.retrieval import recall_at_k, summary


def test_recall_on_known_rankings():
    n = 12
    assert recall_at_k(np.eye(n)) == {d: {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0}
                                      for d in ("image_to_text", "text_to_image")}
    # every image's right caption is beaten by exactly r_i others, r_i = i: R@k = share of images with i < k
    s = np.zeros((n, n))
    for i in range(n):
        s[i, i] = 0.0
        for j in [j for j in range(n) if j != i][:i]:
            s[i, j] = 1.0
        for j in [j for j in range(n) if j != i][i:]:
            s[i, j] = -1.0
    r = recall_at_k(s)["image_to_text"]
    assert r == pytest.approx({"R@1": 100 * 1 / 12, "R@5": 100 * 5 / 12, "R@10": 100 * 10 / 12})
    # text->image reads the columns: the transposed matrix swaps the directions
    assert recall_at_k(s.T)["text_to_image"] == r


def test_ties_count_against_the_right_answer():
    assert recall_at_k(np.zeros((4, 4)))["image_to_text"]["R@1"] == 0.0
    assert recall_at_k(np.zeros((4, 4)))["text_to_image"]["R@5"] == 100.0  # 3 ties still inside the top 5


def test_bad_score_matrix_is_one_line():
    with pytest.raises(InputError, match=r"scores: need a square images x captions matrix"):
        recall_at_k(np.zeros((2, 3)))


def test_captions_from_scenes_are_distinct_and_in_the_demo_vocabulary():
    assert caption([Shape("square", "blue", 3), Shape("circle", "red", 0)]) == \
        "a red circle at the top left, a blue square at the bottom right"
    pairs = caption_pairs(30, seed=0, split="validation")
    assert len({c for _, _, c in pairs}) == 30 and pairs == caption_pairs(30, seed=0, split="validation")[:30]
    from toolkit.training.demo import build_tokenizer

    tok = build_tokenizer()
    unk = tok.convert_tokens_to_ids("<unk>")
    assert all(unk not in tok(c, add_special_tokens=False)["input_ids"] for _, _, c in pairs)


@pytest.mark.slow
def test_demo_model_retrieval_is_stored_and_summarised(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(tmp_path))
    code = cli.main(["retrieval", "--base", "demo", "--limit", "3", "--json"])
    out, _ = capsys.readouterr()
    assert code == 0
    folder = runs.base_folder("demo", root=tmp_path)
    stored = runs.read_retrievals(folder)
    assert list(stored) == ["synthetic-shapes__validation__n3"]
    recall = stored["synthetic-shapes__validation__n3"]["recall"]
    for direction in ("image_to_text", "text_to_image"):
        assert recall[direction]["R@5"] == recall[direction]["R@10"] == 100.0  # 3 candidates: always in the top 5
        assert round(recall[direction]["R@1"], 6) in (0.0, round(100 / 3, 6), round(200 / 3, 6), 100.0)
    rows = summary([{"kind": "base", "ratio": "base", "path": str(folder)}])
    assert rows[0]["ratio"] == "base model" and rows[0]["i2t R@5"] == 100.0
    assert cli.main(["retrieval", "--base", "demo", "--limit", "1"]) == 2
    assert "limit: retrieval needs at least 2" in capsys.readouterr()[1]


def test_model_card_shows_stored_retrieval(tmp_path):
    from toolkit.hub.modelcard import _retrieval_section

    assert _retrieval_section(tmp_path) == []
    runs.write_retrieval(tmp_path, "synthetic-shapes__validation__n50", {
        "recall": {"image_to_text": {"R@1": 12.0, "R@5": 40.0, "R@10": 62.0},
                   "text_to_image": {"R@1": 10.0, "R@5": 38.0, "R@10": 60.0}}})
    text = "\n".join(_retrieval_section(tmp_path))
    assert "| `synthetic-shapes__validation__n50` | image to text | 12.00 | 40.00 | 62.00 |" in text
    assert "text to image | 10.00 | 38.00 | 60.00" in text


def test_ratios_are_tested_against_the_baseline_over_seeds_and_items(tmp_path):
    from toolkit.evaluation.retrieval import against_baseline, ranks

    assert ranks(np.eye(3)) == {"image_to_text": [0, 0, 0], "text_to_image": [0, 0, 0]}
    rows = []
    for ratio, good in (("1:1:1", 20), ("1:4:1", 40), ("4:1:1", 20)):
        for seed in (0, 1, 2):
            folder = tmp_path / f"{ratio.replace(':', '-')}-s{seed}"
            r = [0 if i < good + seed else 9 for i in range(50)]  # the right caption first for `good` images
            runs.write_retrieval(folder, "set", {"recall": {}, "ranks": {"image_to_text": r, "text_to_image": r}})
            rows.append({"kind": "adapter", "ratio": ratio, "seed": seed, "path": str(folder)})
    out = {(row["ratio"], next(k for k in row if k.startswith("Δ"))): row for row in against_baseline(rows)}
    better = out[("1:4:1", "Δ i2t R@5 vs 1:1:1")]
    assert better["Δ i2t R@5 vs 1:1:1"] == pytest.approx(40.0) and better["Holm p"] < 0.05
    same = out[("4:1:1", "Δ t2i R@5 vs 1:1:1")]
    assert same["Δ t2i R@5 vs 1:1:1"] == 0.0 and same["p"] > 0.5


def test_caption_images_an_adapter_trained_on_are_refused_before_loading(tmp_path):
    import datasets
    from PIL import Image

    from toolkit.data.hygiene import TrainedOn
    from toolkit.evaluation.retrieval import evaluate_retrieval, load_pairs

    images = [Image.new("RGB", (8, 8), (40 * i, 0, 0)) for i in range(3)]
    ds = datasets.Dataset.from_dict({"image": images, "caption": ["a", "b", "c"]},
                                    features=datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")}))
    datasets.DatasetDict({"validation": ds}).save_to_disk(str(tmp_path / "caps"))
    ids, loaded, captions, _ = load_pairs(str(tmp_path / "caps"), limit=3)
    assert len(set(ids)) == 3 and captions == ["a", "b", "c"] and len(loaded) == 3
    assert all(not i.startswith(str(tmp_path)) for i in ids)  # the images' own ids, not positions in this dataset
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "cmba.json").write_text('{"format": "cmba-adapter/1", "kind": "adapter", "base_model": {"id": "demo"}}')
    (adapter / "adapter_model.safetensors").write_bytes(b"")  # never read: hygiene refuses first
    runs.write_trained_on(adapter, TrainedOn(question_ids=("q1",), image_ids=(ids[1],), pairs=(("q1", ids[1]),)).to_json())
    with pytest.raises(InputError, match="1 of 3 images"):
        evaluate_retrieval(adapter=str(adapter), dataset=str(tmp_path / "caps"), limit=3)
