"""The planted-bottleneck demo preset (`demo-projector`, issue #26): what is planted, and that a study finds it.

Fast: the planted weight differs from the shipped demo's by exactly a rank-k matrix (k from its recipe), only in
that tensor; the preset resolves like `demo` (calculator, weights folder built on first use into the cache); its
base accuracy is far below the clean demo's on the same questions.
Slow (real training): a reduced positive control, 1:1:1 against 1:4:1 at a rank-2 budget with two seeds each,
where the projector-heavy arm must beat uniform by a clear margin on every seed pair.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from toolkit.training.demo import DEMO_DIR, VARIANTS, demo_model_dir, plant_dir, read_recipe

PRESET = "demo-projector"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CMBA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(tmp_path / "adapters"))
    return tmp_path / "cache"


def test_planted_weight_differs_by_exactly_rank_k():
    recipe = read_recipe(PRESET)
    assert VARIANTS[PRESET] == recipe["component"] == "projector"
    planted = load_file(plant_dir(PRESET) / "planted.safetensors")
    clean = load_file(DEMO_DIR / "model.safetensors")
    assert list(planted) == [recipe["tensor"]] == ["multi_modal_projector.linear_1.weight"]
    diff = (clean[recipe["tensor"]] - planted[recipe["tensor"]]).double()
    s = torch.linalg.svdvals(diff)
    k = recipe["rank"]
    assert k == 8 and s[k - 1] > 1e-3 * s[0]  # k directions really removed ...
    assert s[k] < 1e-5 * s[0]  # ... and not one more: a rank-k LoRA on linear_1 repairs it exactly
    # the removed directions are input directions (W' = W (I - QQ^T)): the planted weight maps them to zero
    _, _, vh = torch.linalg.svd(diff)
    q = vh[:k].T
    assert torch.allclose(planted[recipe["tensor"]].double() @ q, torch.zeros(128, k, dtype=torch.float64), atol=1e-5)


def test_preset_resolves_like_demo(cache):
    from toolkit.calculator.structure import load_structure
    from toolkit.jobs.preflight import weights_problem
    from toolkit.training.modeling import model_source

    a, b = load_structure("demo"), load_structure(PRESET)
    assert b.source == "preset" and b.model_id == PRESET and b.hub_id is None
    assert [(m.name, m.component) for m in a.modules] == [(m.name, m.component) for m in b.modules]
    source, hub = model_source(b)
    assert hub is None and source.startswith(str(cache)) and weights_problem(b) is None
    state, clean = load_file(f"{source}/model.safetensors"), load_file(DEMO_DIR / "model.safetensors")
    changed = sorted(k for k in clean if not torch.equal(clean[k], state[k]))
    assert changed == ["multi_modal_projector.linear_1.weight"] and sorted(state) == sorted(clean)
    assert json.loads((demo_model_dir(PRESET) / "planted.json").read_text())["preset"] == PRESET
    assert demo_model_dir(PRESET) == demo_model_dir(PRESET)  # built once, then found in the cache


@pytest.mark.slow
def test_planted_base_loses_accuracy(cache):
    from toolkit.evaluation.evaluate import evaluate_base

    clean = evaluate_base("demo", "synthetic:shapes", split="validation", limit=300, batch_size=64)
    planted = evaluate_base(PRESET, "synthetic:shapes", split="validation", limit=300, batch_size=64)
    # measured on 1,000 questions: 45.4 % against 26.0 %; colour and shape questions fall to chance
    assert planted["scores"]["overall"] < clean["scores"]["overall"] - 12
    assert planted["scores"]["per_question_type"]["what color is the"] < 40
