"""Parity with PEFT: what the calculator predicts is what `peft.get_peft_model` builds on the real model.

For every family x spec: `load_structure` on the tiny config folder (meta device), `allocate` / `audit`, then
the real tiny model on CPU wrapped with `get_peft_model(model, allocation.lora_config())`. Checked:

- total trainable parameters == `allocation.total`;
- per component, the LoRA parameters under that component's modules == `allocation.components[c].params`;
- every LoRA module sits exactly on an allocated module, with the allocated rank (lora_A is r x in,
  lora_B is out x r), lora_alpha and scaling (alpha / r, or alpha / sqrt(r) for rsLoRA);
- the exported config survives a JSON round trip: read back, it equals the config the PEFT model was built from,
  field for field, so it builds the same model (the same count).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer

from tests.helpers.tiny import MODELS, build_tiny_model, three_part_presets, tiny_structure
from toolkit import AllocationSpec, AlphaRule, Budget, Ratio, Targets, allocate, audit
from toolkit.calculator.architectures import COMPONENTS

SPECS = {
    "rank-1:4:1": AllocationSpec(ratio=Ratio.parse("1:4:1"), budget=Budget("rank", 4), mode="rank"),
    "share-1:1:1": AllocationSpec(ratio=Ratio.parse("1:1:1"), budget=Budget("rank", 4), mode="share"),
    "rank-0:1:1": AllocationSpec(ratio=Ratio.parse("0:1:1"), budget=Budget("rank", 4), mode="rank"),
    "share-2:1:0": AllocationSpec(ratio=Ratio.parse("2:1:0"), budget=Budget("rank", 3), mode="share"),
    "audit-2:8:2": (2, 8, 2),
    # Ranks above min(in, out) of narrow modules (few-KV-head k/v projections, 24-wide layers): capped
    # modules get their own rank_pattern keys, the part of the export most likely to go wrong.
    "audit-capped": (26, 48, 26),
    "lang-attention": AllocationSpec(
        ratio=Ratio.parse("1:2:1"), budget=Budget("rank", 4), mode="rank", targets=Targets(language="attention")
    ),
    "rslora-vision-mlp": AllocationSpec(
        ratio=Ratio.parse("2:1:1"), budget=Budget("rank", 6), mode="rank",
        targets=Targets(vision="mlp"), alpha=AlphaRule("rslora", 16),
    ),
    "fixed-alpha": AllocationSpec(
        ratio=Ratio.parse("1:3:2"), budget=Budget("params", 20_000), mode="share", alpha=AlphaRule("fixed", 8)
    ),
    # The default rounding mixes floor/ceil ranks per module (per-layer rank_pattern keys); uniform is the option.
    "mixed-1:1:2": AllocationSpec(ratio=Ratio.parse("1:1:2"), budget=Budget("rank", 5), mode="rank"),
    "uniform-1:1:2": AllocationSpec(ratio=Ratio.parse("1:1:2"), budget=Budget("rank", 5), rounding="uniform"),
    # The projector fully fine-tuned (modules_to_save) at its true cost, LoRA on the rest from the same budget.
    "full-projector": AllocationSpec(ratio=Ratio.parse("1:1:1"), budget=Budget("rank", 12),
                                     full_finetune=("projector",)),
}


def _cases(spec_ids):
    return [(key, spec_id) for key in MODELS for spec_id in spec_ids]


def _allocation(tiny_dirs, family: str, spec_id: str):
    structure = tiny_structure(tiny_dirs, family)
    spec = SPECS[spec_id]
    return audit(structure, spec) if isinstance(spec, tuple) else allocate(structure, spec)


def _base_name(param_name: str) -> str:
    """`base_model.model.X.lora_A.default.weight` -> `X` (the wrapped Linear's name in the base model)."""
    return param_name.split(".lora_")[0].removeprefix("base_model.model.")


def _peft_model(family: str, config: LoraConfig):
    return get_peft_model(build_tiny_model(family), config)


@pytest.fixture(scope="module", params=_cases(SPECS), ids=[f"{f}-{s}" for f, s in _cases(SPECS)])
def wrapped(request, tiny_dirs):
    """(allocation, the PEFT model built from its config) of one family x spec, built once for the three tests below
    that only read it (pytest runs them one after the other, then drops it); ~0.1-0.3 s a `get_peft_model`."""
    family, spec_id = request.param
    allocation = _allocation(tiny_dirs, family, spec_id)
    return allocation, _peft_model(family, allocation.lora_config())


def test_peft_counts_match_allocation(wrapped):
    allocation, peft_model = wrapped
    assert allocation.total > 0

    trainable, _ = peft_model.get_nb_trainable_parameters()
    assert trainable == allocation.total

    component_of = {m.name: m.component for m in allocation.modules if not m.full}
    full_of = {m.name: m.component for m in allocation.modules if m.full}
    per_component = dict.fromkeys(COMPONENTS, 0)
    lora_names, full_names = set(), set()
    for name, param in peft_model.named_parameters():
        if not param.requires_grad:
            continue
        if ".modules_to_save." in name:  # a fully fine-tuned Linear: PEFT's trainable copy, weight and bias
            base = name.split(".modules_to_save.")[0].removeprefix("base_model.model.")
            assert base in full_of, f"PEFT trains {base} fully, which the allocation does not"
            full_names.add(base)
            per_component[full_of[base]] += param.numel()
            continue
        assert ".lora_A." in name or ".lora_B." in name, f"unexpected trainable parameter {name}"
        base = _base_name(name)
        assert base in component_of, f"PEFT put LoRA on {base}, which the allocation does not target"
        lora_names.add(base)
        per_component[component_of[base]] += param.numel()
    assert lora_names == set(component_of), "some allocated modules got no LoRA"
    assert full_names == set(full_of), "some fully fine-tuned modules are not trainable"
    for comp in COMPONENTS:
        assert per_component[comp] == allocation.components[comp].params, comp
        if allocation.components[comp].rank == 0 and not allocation.components[comp].full:
            assert per_component[comp] == 0


def test_peft_ranks_and_alphas_match_allocation(wrapped):
    allocation, peft_model = wrapped
    rslora = allocation.alpha_rule.rule == "rslora"
    layers = {
        name.removeprefix("base_model.model."): mod
        for name, mod in peft_model.named_modules()
        if isinstance(mod, LoraLayer)
    }
    assert set(layers) == {m.name for m in allocation.modules if not m.full}
    for m in (m for m in allocation.modules if not m.full):
        layer = layers[m.name]
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        assert tuple(a.shape) == (m.rank, m.in_features), m.name
        assert tuple(b.shape) == (m.out_features, m.rank), m.name
        assert layer.r["default"] == m.rank
        assert layer.lora_alpha["default"] == pytest.approx(m.alpha), m.name
        expected_scaling = m.alpha / (math.sqrt(m.rank) if rslora else m.rank)
        assert layer.scaling["default"] == pytest.approx(expected_scaling), m.name
        assert m.params == m.rank * (m.in_features + m.out_features)


def test_lora_config_json_round_trip(wrapped):
    """The config read back from JSON is the one the PEFT model was built from, field for field (LoraConfig's
    dataclass equality): `get_peft_model` builds the same model from it, with the allocation's count. (It built a
    second PEFT model from the JSON config for 5 of the specs; equality holds for every spec and costs nothing.)"""
    allocation, peft_model = wrapped
    config = LoraConfig(**json.loads(json.dumps(allocation.lora_config_dict())))
    assert config == allocation.lora_config()
    assert peft_model.get_nb_trainable_parameters()[0] == allocation.total


@pytest.mark.parametrize("family", MODELS)
def test_structure_matches_real_model(tiny_dirs, family):
    """The meta-device structure lists exactly the real model's Linear layers, with their shapes and sizes."""
    structure = tiny_structure(tiny_dirs, family)
    model = build_tiny_model(family)
    real = {n: (m.in_features, m.out_features) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert {m.name: (m.in_features, m.out_features) for m in structure.modules} == real
    assert structure.total_params == sum(p.numel() for p in model.parameters())
    assert sum(structure.component_params.values()) <= structure.total_params
    for comp in COMPONENTS:
        assert structure.linears(comp), f"{family}: no {comp} Linear layers found"


@pytest.mark.parametrize("family", MODELS)
def test_rank_budget_is_uniform_rank_equivalent(tiny_dirs, family):
    """A uniform ratio at `Budget('rank', r)` is a uniform rank r (when no module caps): PEFT agrees."""
    structure = tiny_structure(tiny_dirs, family)
    allocation = allocate(structure, AllocationSpec(ratio=Ratio.parse("1:1:1"), budget=Budget("rank", 2)))
    assert allocation.ranks() == (2, 2, 2)
    uniform = LoraConfig(r=2, lora_alpha=4, target_modules=[m.name for m in allocation.modules])
    assert _peft_model(family, uniform).get_nb_trainable_parameters()[0] == allocation.total == allocation.budget


@pytest.mark.parametrize("family", MODELS)
def test_capped_spec_really_caps(tiny_dirs, family):
    """Guard for the parity tests above: 'audit-capped' must produce capped modules in every family."""
    allocation = _allocation(tiny_dirs, family, "audit-capped")
    linear = {m.name: m for m in tiny_structure(tiny_dirs, family).modules}
    capped = [m for m in allocation.modules if m.capped]
    assert capped
    # the cap: min(in, out), or lower where LoRA would cost more than fully training the layer
    assert all(m.rank == linear[m.name].max_rank <= min(m.in_features, m.out_features) for m in capped)
    assert all(m.params <= linear[m.name].full_params for m in capped)
    assert len({m.rank for m in allocation.modules}) >= 2


def _kind_from_classes(model, name: str) -> str:
    """Ground truth for a Linear's kind: the innermost enclosing module class named *Attention* or *MLP*."""
    modules = dict(model.named_modules())
    parts = name.split(".")
    tagged = [
        type(modules[".".join(parts[:i])]).__name__.lower()
        for i in range(1, len(parts))
        if any(word in type(modules[".".join(parts[:i])]).__name__.lower() for word in ("attention", "mlp"))
    ]
    return "attention" if tagged and "attention" in tagged[-1] else "mlp"


@pytest.mark.parametrize(
    "family",
    MODELS,
)
def test_module_kinds_match_model_classes(tiny_dirs, family):
    """`targets` (attention / mlp) select what the model's own classes call attention and MLP blocks."""
    structure = tiny_structure(tiny_dirs, family)
    model = build_tiny_model(family)
    wrong = [(m.name, m.kind) for m in structure.modules if m.kind != _kind_from_classes(model, m.name)]
    assert not wrong, f"{len(wrong)} misclassified, e.g. {wrong[:3]}"


@pytest.mark.slow  # real-size models on the meta device, seconds each
@pytest.mark.parametrize("preset", three_part_presets())  # Gemma 3: tests/training/test_families.py
def test_real_size_presets_peft_count_on_meta_device(preset):
    """The full-size architectures (7B included), built on `meta`: PEFT's count equals the calculator's."""
    from toolkit import AllocationSpec, Budget, Ratio, allocate, load_structure
    from toolkit.calculator.loraconfig import peft_trainable_count

    structure = load_structure(preset)
    for ratio, mode in (("1:4:1", "rank"), ("2:1:1", "share")):
        a = allocate(structure, AllocationSpec(ratio=Ratio.parse(ratio), budget=Budget("rank", 8), mode=mode))
        assert peft_trainable_count(structure, a) == a.total, (preset, ratio, mode)
