"""Fixtures of the data tests: lmms-lab/VQAv2 as published, offline.

    vqav2_hub      a local Hub (tests/helpers/hub_server.py) holding "lmms-lab/VQAv2", pushed with `datasets`'
                   own `push_to_hub`, so its files are those the Hub repo has: README.md with dataset_info and
                   configs, data/{validation,testdev,test}-00000-of-00001.parquet (session)
    vqav2_folder   that repo downloaded to a folder (`hf download lmms-lab/VQAv2 --repo-type dataset --local-dir`)
    vqav2_cache    HF_HOME after `datasets.load_dataset("lmms-lab/VQAv2")` ran against it in a fresh process: the
                   hub cache (datasets--lmms-lab--VQAv2/refs, snapshots, blobs) and the datasets cache
                   (lmms-lab___vq_av2/default/0.0.0/<commit>/*.arrow) that a real download leaves (session)

The splits hold the published features (question_type, multiple_choice_answer, answers [{answer,
answer_confidence, answer_id}], image_id, answer_type, question_id, question, image as PNG bytes) with VQAv2's
id conventions (COCO image ids, question_id = image_id * 1000 + k, three questions per image, ten answers per
question). testdev and test withhold their answers, as the real ones do: testdev as nulls, test as empty lists
(either way: both are refused).
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = "lmms-lab/VQAv2"
IMAGES = {"validation": 40, "testdev": 10, "test": 12}
"""images per split; each has three questions"""
HOLDOUT = 0.25
"""the share the tests hold out: with 40 images both parts are non-empty (checked by the tests)"""


def vqav2_features():
    from datasets import Features, Image, List, Value

    return Features({
        "question_type": Value("string"), "multiple_choice_answer": Value("string"),
        "answers": List({"answer": Value("string"), "answer_confidence": Value("string"), "answer_id": Value("int64")}),
        "image_id": Value("int64"), "answer_type": Value("string"), "question_id": Value("int64"),
        "question": Value("string"), "image": Image(),
    })


def _answers(right: str, other: str, k: int) -> list[dict]:
    """Ten human answers: mostly right, one of them `other` for every k-th question (as annotators disagree)."""
    said = [right] * 10 if k % 2 else [right] * 9 + [other]
    return [{"answer": a, "answer_confidence": "yes" if a == right else "maybe", "answer_id": n + 1}
            for n, a in enumerate(said)]


def vqav2_rows(split: str, images: int) -> list[dict]:
    """Rows of one split: three questions on each synthetic scene (how many / is there a / what color is the)."""
    from toolkit.data.synthetic import NUMBER_WORDS, render, scene

    answered = split == "validation"
    rows = []
    for j in range(images):
        image_id = 262_144 + 7 * j + {"validation": 0, "testdev": 1, "test": 2}[split]
        shapes = scene(3, split, j)
        buf = io.BytesIO()
        render(shapes, 3, split, j).save(buf, format="PNG")
        first = shapes[0]
        qas = [
            ("how many", "How many shapes are there?", str(len(shapes)), NUMBER_WORDS[len(shapes)], "number"),
            ("is there a", f"Is there a {first.color} {first.shape}?", "yes", "no", "yes/no"),
            ("what color is the", f"What color is the {first.shape}?", first.color, "orange", "other"),
        ]
        for k, (qtype, question, right, other, atype) in enumerate(qas):
            row = {"question_type": qtype, "multiple_choice_answer": right, "answers": _answers(right, other, j + k),
                   "image_id": image_id, "answer_type": atype, "question_id": image_id * 1000 + k,
                   "question": question, "image": {"bytes": buf.getvalue(), "path": None}}
            if not answered:  # withheld: testdev as nulls, test as empty lists
                row |= {"question_type": None, "multiple_choice_answer": None, "answer_type": None,
                        "answers": None if split == "testdev" else []}
            rows.append(row)
    return rows


@dataclass
class PublishedHub:
    url: str
    token: str
    revision: str
    rows: dict
    """split -> the rows pushed"""


@pytest.fixture(scope="session")
def vqav2_hub(tmp_path_factory):
    import datasets
    from datasets import Dataset, DatasetDict
    from huggingface_hub import HfApi

    from tests.helpers.hub_server import LocalHub

    hub = LocalHub(tmp_path_factory.mktemp("vqav2-hub")).start()
    token = hub.add_token("hf_local_write_" + secrets.token_hex(8), user="pufanyi", orgs=("lmms-lab",))
    rows = {split: vqav2_rows(split, n) for split, n in IMAGES.items()}
    published = DatasetDict({s: Dataset.from_list(r, features=vqav2_features()) for s, r in rows.items()})
    with pytest.MonkeyPatch.context() as mp:
        import huggingface_hub.constants as constants

        mp.setattr(datasets.config, "HF_ENDPOINT", hub.url)  # push_to_hub's HfApi(endpoint=...)
        mp.setattr(constants, "HF_HUB_DISABLE_XET", True)  # the local Hub speaks LFS only
        mp.setattr(constants, "HF_HUB_DISABLE_PROGRESS_BARS", True)
        published.push_to_hub(REPO, token=token)
    revision = HfApi(endpoint=hub.url, token=token).dataset_info(REPO).sha
    try:
        yield PublishedHub(hub.url, token, revision, rows)
    finally:
        hub.stop()


@pytest.fixture(scope="session")
def vqav2_folder(vqav2_hub, tmp_path_factory) -> Path:
    from huggingface_hub import snapshot_download

    folder = tmp_path_factory.mktemp("vqav2-download") / "VQAv2"
    with pytest.MonkeyPatch.context() as mp:
        import huggingface_hub.constants as constants

        mp.setattr(constants, "HF_HUB_DISABLE_PROGRESS_BARS", True)
        snapshot_download(REPO, repo_type="dataset", local_dir=folder, endpoint=vqav2_hub.url,
                          token=vqav2_hub.token)
    return folder


@pytest.fixture(scope="session")
def vqav2_cache(vqav2_hub, tmp_path_factory) -> Path:
    """HF_HOME after a real `datasets.load_dataset("lmms-lab/VQAv2")` in a fresh process (online, local Hub)."""
    hf_home = tmp_path_factory.mktemp("vqav2-hf-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env |= {"HF_HOME": str(hf_home), "HF_ENDPOINT": vqav2_hub.url, "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    code = f"import datasets; print(datasets.load_dataset({REPO!r}))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    yield hf_home
    shutil.rmtree(hf_home, ignore_errors=True)
