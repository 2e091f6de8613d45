"""The planted-bottleneck demo preset (`demo-projector`, issue #26): what is planted, and that a study finds it.

Fast: the planted weight differs from the shipped demo's by exactly a rank-k matrix (k from its recipe), only in
that tensor; the preset resolves like `demo` (calculator, weights folder built on first use into the cache); its
base accuracy is far below the clean demo's on the same questions.
Slow (real training, ~7 min): a reduced positive control, 1:1:1 against 1:4:1 at a rank-2 budget, two seeds each,
where the projector-heavy arm must beat uniform by more than a point on average.
"""

from __future__ import annotations

import json
import os

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
    # the removed directions are output directions (W' = (I - UU^T) W): the planted weight writes nothing there
    u, _, _ = torch.linalg.svd(diff)
    assert torch.allclose(u[:, :k].T @ planted[recipe["tensor"]].double(), torch.zeros(k, 64, dtype=torch.float64),
                          atol=1e-5)


def test_preset_resolves_like_demo(cache):
    from toolkit.calculator.structure import load_structure
    from toolkit.study.preflight import weights_problem
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
    # measured on 1,000 questions: 45.4 % against 28.1 %; colour and shape questions fall to chance
    assert planted["scores"]["overall"] < clean["scores"]["overall"] - 12
    assert planted["scores"]["per_question_type"]["what color is the"] < 40


STEPS, LR, EVAL_N = 300, 2e-3, 2000
"""the control's own settings (bench/controls.sh, seeds 0 and 1 of 5): on the rebuilt demo (stage 2) 1:4:1 scored
71.83 / 74.06 % and 1:1:1 69.23 / 71.37 % (seeds 10 and 11 with data seed 1: 77.57 / 78.17 against 67.57 / 65.94);
on the demo before stage 2, 80.18 / 80.40 against 77.49 / 74.71 %. A shorter run does not do: 100 steps at lr 5e-3 gave 1:4:1 63.22 / 72.02 % against 1:1:1
66.24 / 66.96 % (the repair is not reliable yet). Four 300-step runs take about 7 minutes on two shared cores."""
DATA = "synthetic:shapes?types=color,shape,exist"  # the question families the plant breaks (bench/controls.sh)


def _accuracy(tmp_path, ratio: str, seed: int) -> float:
    from toolkit.evaluation.evaluate import evaluate_adapter
    from toolkit.training.engine import train
    from toolkit.training.settings import TrainSettings

    out = tmp_path / f"r{ratio.replace(':', '-')}-s{seed}"
    settings = TrainSettings(model=PRESET, dataset=DATA, ratio=ratio, budget_rank=2, seed=seed,
                             max_steps=STEPS, batch_size=16, lr=LR, output=str(out), progress=False)
    train(settings, log=lambda m: None)
    return evaluate_adapter(out, DATA, split="validation", limit=EVAL_N, batch_size=64)["scores"]["overall"]


@pytest.mark.slow
@pytest.mark.training
@pytest.mark.skipif(os.environ.get("CMBA_CONTROLS") != "1", reason="4 real 300-step trainings (about 4-7 min on 2 "
                    "cores): set CMBA_CONTROLS=1 to run the reduced positive control (bench/controls.sh runs the full one)")
def test_reduced_positive_control_finds_the_projector(cache, tmp_path):
    """1:4:1 (projector rank ~7, enough to undo the rank-8 plant's informative part) against 1:1:1 (projector
    rank 2) at the same rank-2 budget, two seeds each, through real training: the projector-heavy arm wins by more
    than a point on average."""
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    uniform = [_accuracy(tmp_path, "1:1:1", seed) for seed in (0, 1)]
    heavy = [_accuracy(tmp_path, "1:4:1", seed) for seed in (0, 1)]
    gap = sum(heavy) / 2 - sum(uniform) / 2
    assert gap > 1, (heavy, uniform)  # measured +2.6 (seeds 0-1) and +11.1 (seeds 10-11): the 5-seed study's +4.9
