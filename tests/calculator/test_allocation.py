"""The budget solver (toolkit.calculator.allocation) and the LoraConfig export (toolkit.calculator.loraconfig) on the bundled presets.

Everything here is offline: presets are configs only, built on the meta device (about 0.1 s each once
transformers is imported). Solver *speed* is benchmarked in bench/, not asserted here.
"""

from __future__ import annotations

import json
import re
from itertools import combinations

import pytest

from tests.helpers.tiny import preset_structure, three_part_presets
from toolkit.calculator.allocation import allocate, audit
from toolkit.calculator.loraconfig import (
    check_patterns,
    lora_config_dict,
    lora_config_json,
    lora_config_snippet,
    peft_rank_of,
)
from toolkit.calculator.spec import AllocationSpec, AlphaRule, Budget, Ratio, Targets
from toolkit.calculator.structure import load_structure
from toolkit.errors import BudgetError, CmbaError, InputError

COMPONENTS = ("vision", "projector", "language")
PRESETS = tuple(three_part_presets())  # Gemma 3's projector: tests/training/test_families.py
ALL_LINEARS = Targets()

# DESIGN.md reference figure: LLaVA-1.5-7B, LoRA on every Linear but lm_head, per unit of rank.
LLAVA_VISION_WITH_DEAD = 442_368
LLAVA_PROJECTOR = 13_312
LLAVA_LANGUAGE = 2_498_560


structure = preset_structure
"""Presets are immutable (frozen dataclasses): each is loaded once per test session, for every calculator module."""
pytestmark = pytest.mark.xdist_group("presets")
"""under pytest-xdist the calculator modules that load presets run in one process, which loads each preset once"""


@pytest.fixture(scope="module")
def llava():
    return structure("llava-1.5-7b")


@pytest.fixture(scope="module")
def paligemma():
    return structure("paligemma-3b")


@pytest.fixture(scope="module")
def demo():
    return structure("demo")


def solve(s, ratio: str, budget: Budget | tuple = ("rank", 8), mode: str = "rank", rounding: str = "uniform", **kw):
    """The uniform-integer rounding (one rank per component) unless told otherwise; tests/calculator/test_budget_exact.py
    covers the default mixed rounding."""
    if isinstance(budget, tuple):
        budget = Budget(*budget)
    return allocate(s, AllocationSpec(ratio=Ratio.parse(ratio), budget=budget, mode=mode, rounding=rounding, **kw))


def rank_budget(s, r: float, targets: Targets = ALL_LINEARS) -> int:
    """What DESIGN.md says a rank budget is: r x sum(in + out) over the targeted modules of all three parts."""
    return round(r * sum(m.in_features + m.out_features for c in COMPONENTS for m in s.linears(c, targets.kind(c))))


def capped_or_pinned(a) -> bool:
    """True when caps or the rank-1 floor, not the ratio, decided some component's rank."""
    pinned = ("capped", "full rank", "raised to", "redistributed")
    return any(m.capped for m in a.modules) or any(any(p in w for p in pinned) for w in a.warnings)


# ------------------------------------------------------------------------------- the DESIGN reference figure


def test_reference_costs_per_unit_rank(llava):
    assert llava.family == "llava"
    assert llava.cost_per_rank("vision") == 423_936  # live vision layers only
    assert llava.cost_per_rank("projector") == LLAVA_PROJECTOR
    assert llava.cost_per_rank("language") == LLAVA_LANGUAGE

    dead = llava.dead
    assert len(dead) == 6
    assert {m.name.split(".")[-1] for m in dead} == {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}
    assert all(m.name.startswith("model.vision_tower.") and ".layers.23." in m.name for m in dead)
    assert all(m.component == "excluded" and m.excluded_reason.startswith("dead") for m in dead)
    # with the dead last layer the vision figure is DESIGN's 442,368
    assert llava.cost_per_rank("vision") + sum(m.cost_per_rank for m in dead) == LLAVA_VISION_WITH_DEAD
    assert 8 * (LLAVA_VISION_WITH_DEAD + LLAVA_PROJECTOR + LLAVA_LANGUAGE) == 23_633_920


def test_reference_audit_8_8_8_covers_every_live_module(llava):
    a = audit(llava, (8, 8, 8))
    live = {m.name for c in COMPONENTS for m in llava.linears(c)}
    assert {m.name for m in a.modules} == live
    assert not {m.name for m in llava.excluded} & {m.name for m in a.modules}
    assert all(m.rank == 8 and m.alpha == 16 for m in a.modules)
    assert a.ranks() == (8, 8, 8)
    assert a.mode == "audit"
    assert a.total == 8 * (423_936 + LLAVA_PROJECTOR + LLAVA_LANGUAGE) == 23_486_464
    assert a.budget is None and a.budget_error is None


def test_reference_1_4_1_at_rank_8_is_8_32_8(llava):
    a = solve(llava, "1:4:1", ("rank", 8))
    assert a.ranks() == (8, 32, 8)
    assert a.budget == 23_486_464
    assert abs(a.budget_error) < 2
    assert a.total == sum(m.params for m in a.modules)
    assert a.achieved_ratio == pytest.approx((1, 4, 1))


def test_reference_hand_picked_4_16_4_costs_about_half(llava):
    picked = audit(llava, (4, 16, 4), budget=Budget("rank", 8))
    uniform = audit(llava, (8, 8, 8))
    assert picked.budget == uniform.total
    assert picked.total / uniform.total == pytest.approx(0.5, abs=0.02)
    assert picked.budget_error == pytest.approx(-49, abs=1.0)
    assert picked.budget_error == pytest.approx(100 * (picked.total - picked.budget) / picked.budget)


# ------------------------------------------------------------------------------------------- properties

RATIOS = ("1:1:1", "1:4:1", "2:4:1", "1:2:4", "1:8:1", "4:1:1", "0.5:3:1", "0:1:1", "1:0:1", "0:0:1")


def check_invariants(s, a, ratio: Ratio, targets: Targets = ALL_LINEARS, alpha_k: float = 2.0):
    weights = dict(zip(COMPONENTS, ratio.as_tuple()))
    assert a.total == sum(m.params for m in a.modules) == sum(c.params for c in a.components.values())
    assert a.budget_error == pytest.approx(100 * (a.total - a.budget) / a.budget)
    linear = {m.name: m for m in s.modules}
    for m in a.modules:
        # the cap: min(in, out), and no rank whose LoRA costs more than fully training the layer
        cap = max(1, min(m.in_features, m.out_features, linear[m.name].full_params // (m.in_features + m.out_features)))
        assert 1 <= m.rank <= cap, m
        assert m.params == m.rank * (m.in_features + m.out_features)
        assert m.params <= max(linear[m.name].full_params, m.in_features + m.out_features)
        assert m.alpha == alpha_k * m.rank
        if a.rounding == "uniform":
            assert m.capped == (a.components[m.component].rank > cap)
        assert m.full_cheaper == (m.params >= linear[m.name].full_params)
    for comp in COMPONENTS:
        c = a.components[comp]
        mine = [m for m in a.modules if m.component == comp]
        if weights[comp] == 0:
            assert (c.rank, c.modules, c.params) == (0, 0, 0) and not mine
        else:
            assert c.rank >= 1
            assert {m.name for m in mine} == {m.name for m in s.linears(comp, targets.kind(comp))}
            assert c.modules == len(mine)
            assert c.alpha == alpha_k * c.rank
    assert sum(c.share_of_budget for c in a.components.values()) == pytest.approx(1.0)
    assert all("\n" not in w for w in a.warnings)


@pytest.mark.parametrize("mode", ["rank", "share"])
@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("name", PRESETS)
def test_properties_over_presets_ratios_modes(name, ratio, mode, record_property):
    s = structure(name)
    errors = {}
    for r in (8, 16, 32):
        a = solve(s, ratio, ("rank", r), mode)
        errors[r] = round(a.budget_error, 3)
        check_invariants(s, a, Ratio.parse(ratio))
        assert a.budget == rank_budget(s, r)
        assert a.mode == mode
        assert abs(a.budget_error) <= 10, (name, ratio, mode, r, a.ranks(), a.budget_error)

        weights = dict(zip(COMPONENTS, Ratio.parse(ratio).as_tuple()))
        active = [c for c in COMPONENTS if weights[c] > 0]
        if capped_or_pinned(a):
            continue
        if mode == "rank":
            # r_c = s * w_c up to rounding: each rank within one step of a common scale
            for i, j in combinations(active, 2):
                ri, rj = a.components[i].rank, a.components[j].rank
                assert abs(ri / weights[i] - rj / weights[j]) <= 1 / weights[i] + 1 / weights[j], a.ranks()
        else:
            total_w = sum(weights.values())
            for c in active:
                assert a.components[c].share_of_budget == pytest.approx(weights[c] / total_w, abs=0.08), a.ranks()
    record_property("budget_error_percent", errors)


@pytest.mark.parametrize("mode", ["rank", "share"])
@pytest.mark.parametrize("name", ["llava-1.5-7b", "qwen2.5-vl-7b", "blip2-opt-2.7b", "smolvlm-256m"])
def test_percent_and_params_budgets_stay_close(name, mode):
    s = structure(name)
    for budget in (Budget("percent", 1), Budget("params", 50_000_000)):
        for ratio in ("1:1:1", "1:4:1", "2:4:1"):
            a = solve(s, ratio, budget, mode)
            check_invariants(s, a, Ratio.parse(ratio))
            assert abs(a.budget_error) <= 10, (name, ratio, mode, budget, a.ranks(), a.budget_error)


@pytest.mark.parametrize("ratio, left_out", [("0:1:1", "vision"), ("1:0:1", "projector"), ("1:1:0", "language")])
def test_ratio_zero_leaves_component_out(llava, ratio, left_out):
    for mode in ("rank", "share"):
        a = solve(llava, ratio, ("rank", 8), mode)
        comp = a.components[left_out]
        assert (comp.rank, comp.alpha, comp.params, comp.modules, comp.share_of_budget) == (0, 0, 0, 0, 0.0)
        assert not [m for m in a.modules if m.component == left_out]
        assert not [n for n in a.lora_config_dict()["target_modules"] if n.startswith(LLAVA_PREFIX[left_out])]
        assert any(w.startswith(f"{left_out}: ratio 0") for w in a.warnings)


LLAVA_PREFIX = {"vision": "model.vision_tower.", "projector": "model.multi_modal_projector.",
                "language": "model.language_model."}


def test_rank_mode_ranks_follow_ratio_exactly_for_simple_ratios(llava):
    for ratio, expected in [("1:1:1", (8, 8, 8)), ("2:4:1", None), ("1:8:1", None)]:
        a = solve(llava, ratio, ("rank", 8))
        if expected:
            assert a.ranks() == expected
        v, p, language = a.ranks()
        w = Ratio.parse(ratio).as_tuple()
        # 1:4:1 stays 8:32:8 rather than 8:31:8: exact multiples of the ratio are preferred
        assert v * w[1] == p * w[0] and language * w[1] == p * w[2], a.ranks()


def test_share_mode_shares_follow_ratio(llava):
    a = solve(llava, "1:1:1", ("rank", 8), "share")
    assert not capped_or_pinned(a)
    for c in COMPONENTS:
        assert a.components[c].share_of_budget == pytest.approx(1 / 3, abs=0.05)
    assert abs(a.budget_error) <= 5
    # share mode gives the small projector a far higher rank than rank mode does
    assert a.components["projector"].rank > 10 * solve(llava, "1:1:1", ("rank", 8)).components["projector"].rank


def test_share_mode_redistributes_what_a_capped_projector_cannot_absorb(paligemma):
    proj = paligemma.linears("projector")
    assert len(proj) == 1
    full_rank = proj[0].max_rank  # LoRA above it would cost more than fully training the projector
    assert full_rank == (1152 * 2048 + 2048) // (1152 + 2048) < min(1152, 2048)
    capacity = full_rank * (proj[0].in_features + proj[0].out_features)
    assert capacity <= proj[0].full_params

    a = solve(paligemma, "1:4:1", ("rank", 8), "share")
    assert a.budget * 4 / 6 > capacity  # the projector's share is more than LoRA can hold there
    assert a.components["projector"].rank == full_rank
    assert a.components["projector"].params == capacity
    assert a.components["projector"].share_of_budget < 4 / 6
    redistributed = [w for w in a.warnings if "redistribut" in w]
    assert len(redistributed) == 1 and redistributed[0].startswith("projector:")
    assert f"{capacity:,}" in redistributed[0]
    assert abs(a.budget_error) <= 5  # the rest went to vision and language
    assert a.components["vision"].params + a.components["language"].params == pytest.approx(
        a.budget - capacity, rel=0.1
    )
    check_invariants(paligemma, a, Ratio.parse("1:4:1"))


def test_share_mode_equal_weights_get_equal_shares_after_redistribution(paligemma):
    a = solve(paligemma, "1:16:1", ("rank", 8), "share")
    assert a.components["projector"].rank == 737  # capped (LoRA beyond costs more than full FT): excess split 1:1
    assert a.components["vision"].share_of_budget == pytest.approx(a.components["language"].share_of_budget, abs=0.1)


def test_rank_mode_keeps_ratio_order_when_a_component_is_raised_to_one(llava):
    a = solve(llava, "1:2:8", ("rank", 2))
    v, p, language = a.ranks()
    assert v <= p <= language, a.ranks()
    for w in a.warnings:
        if "raised to 1" in w:
            assert a.components[w.split(":")[0]].rank == 1, (w, a.ranks())


def test_rank_mode_raised_to_one_is_reported(llava):
    a = solve(llava, "1:4:16", ("params", 30_000_000))
    assert a.components["vision"].rank == 1
    assert any(w.startswith("vision:") and "raised to 1" in w for w in a.warnings)


def test_rank_mode_full_rank_component_leaves_rest_to_others(demo):
    a = solve(demo, "1:64:1", ("rank", 8), rounding="mixed")
    assert any(w.startswith("projector:") and "rank cap" in w for w in a.warnings)
    assert a.components["projector"].rank >= 43  # far above what the budget would allow the others
    # equal weights stay equal
    assert a.components["vision"].mean_rank == pytest.approx(a.components["language"].mean_rank, rel=0.05)
    assert abs(a.budget_error) <= 0.5
    check_invariants(demo, a, Ratio.parse("1:64:1"))


def test_rank_mode_full_rank_note_is_true(demo):
    linear = {m.name: m for m in demo.modules}
    for rounding in ("uniform", "mixed"):
        a = solve(demo, "1:64:1", ("rank", 8), rounding=rounding)
        assert any(w.startswith("projector:") and "every module is at its rank cap" in w for w in a.warnings)
        proj = [m for m in a.modules if m.component == "projector"]
        assert all(m.rank == linear[m.name].max_rank for m in proj), [(m.name, m.rank) for m in proj]


# ------------------------------------------------------------------------------------------- budget forms


def test_rank_budget_counts_all_three_components_whatever_the_ratio(llava):
    expected = rank_budget(llava, 8)
    assert expected == 8 * (423_936 + LLAVA_PROJECTOR + LLAVA_LANGUAGE)
    budgets = {ratio: solve(llava, ratio, ("rank", 8)).budget for ratio in ("1:1:1", "0:1:1", "0:0:1", "1:4:1")}
    assert set(budgets.values()) == {expected}, budgets


def test_rank_budget_follows_targets(llava):
    targets = Targets(language="attention")
    a = solve(llava, "1:1:1", ("rank", 8), targets=targets)
    expected = 8 * (
        llava.cost_per_rank("vision") + llava.cost_per_rank("projector") + llava.cost_per_rank("language", "attention")
    )
    assert a.budget == expected == rank_budget(llava, 8, targets)
    assert a.ranks() == (8, 8, 8)


def test_fractional_rank_budget(llava):
    a = solve(llava, "1:1:1", ("rank", 2.5))
    assert a.budget == round(2.5 * (423_936 + LLAVA_PROJECTOR + LLAVA_LANGUAGE))


@pytest.mark.parametrize("name", ["llava-1.5-7b", "qwen2-vl-2b", "blip2-opt-2.7b"])
@pytest.mark.parametrize("percent", [0.5, 1, 2.5])
def test_percent_budget_is_share_of_base_model(name, percent):
    s = structure(name)
    a = solve(s, "1:4:1", ("percent", percent))
    assert a.budget == round(percent / 100 * s.total_params)
    assert "%" in a.budget_spec


def test_params_budget_is_absolute(llava):
    for n in (10_000_000, 23_486_464, 123_456_789):
        a = solve(llava, "2:4:1", ("params", n))
        assert a.budget == n
        assert abs(a.total - n) / n <= 0.1


# ------------------------------------------------------------------------------------------------ targets


def test_language_attention_targets_only_attention(llava):
    a = solve(llava, "1:1:1", ("rank", 8), targets=Targets(language="attention"))
    lang = [m for m in a.modules if m.component == "language"]
    assert lang and all(m.kind == "attention" for m in lang)
    assert {m.name.split(".")[-1] for m in lang} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert len(lang) == 32 * 4
    # other components are untouched
    assert len([m for m in a.modules if m.component == "vision"]) == len(llava.linears("vision"))
    assert a.components["language"].target_kind == "attention"
    assert set(a.lora_config_dict()["target_modules"]) == {m.name for m in a.modules}
    check_invariants(llava, a, Ratio.parse("1:1:1"), Targets(language="attention"))


def test_vision_mlp_targets_only_mlp(llava):
    a = solve(llava, "1:1:1", ("rank", 8), targets=Targets(vision="mlp"))
    vis = [m for m in a.modules if m.component == "vision"]
    assert vis and all(m.kind == "mlp" for m in vis)
    assert {m.name.split(".")[-1] for m in vis} == {"fc1", "fc2"}


def test_projector_attention_on_llava_names_targets_projector(llava):
    with pytest.raises(InputError) as excinfo:
        solve(llava, "1:1:1", ("rank", 8), targets=Targets(projector="attention"))
    message = str(excinfo.value)
    assert message.startswith("targets.projector:")
    assert "\n" not in message
    assert "all, mlp" in message  # what is allowed here
    # a component left out by the ratio is not checked
    a = solve(llava, "1:0:1", ("rank", 8), targets=Targets(projector="attention"))
    assert a.components["projector"].modules == 0


# ----------------------------------------------------------------------------------------- budget bounds


@pytest.mark.parametrize("ratio", ["1:1:1", "0:0:1", "1:4:0"])
def test_budget_below_minimum_names_the_minimum(llava, ratio):
    weights = dict(zip(COMPONENTS, Ratio.parse(ratio).as_tuple()))
    minimum = sum(llava.cost_per_rank(c) for c in COMPONENTS if weights[c] > 0)
    for mode in ("rank", "share"):
        with pytest.raises(BudgetError) as excinfo:
            solve(llava, ratio, ("params", minimum - 1), mode)
        assert isinstance(excinfo.value, InputError) and isinstance(excinfo.value, CmbaError)
        message = str(excinfo.value)
        assert message.startswith("budget:") and "\n" not in message
        assert "minimum" in message and f"{minimum:,}" in message
        # exactly the minimum is every targeted module at rank 1
        a = solve(llava, ratio, ("params", minimum), mode)
        assert a.total == minimum
        assert all(m.rank == 1 for m in a.modules)


def test_budget_above_maximum_raises(paligemma):
    proj = paligemma.linears("projector")
    maximum = sum(m.max_rank * (m.in_features + m.out_features) for m in proj)
    assert maximum <= sum(m.full_params for m in proj)
    with pytest.raises(BudgetError) as excinfo:
        solve(paligemma, "0:1:0", ("rank", 8))
    message = str(excinfo.value)
    assert message.startswith("budget:") and "\n" not in message
    assert "maximum" in message and f"{maximum:,}" in message
    a = solve(paligemma, "0:1:0", ("params", maximum))
    assert a.total == maximum and a.budget_error == 0


# ------------------------------------------------------------------------------------------------- alpha


def test_scaled_alpha_is_twice_the_rank_per_module_including_capped(llava):
    # the projector's linear_1 is capped at 820: LoRA above costs more than its 1024 x 4096 + 4096 parameters
    a = solve(llava, "1:4:1", ("rank", 8), "share")
    capped = [m for m in a.modules if m.capped]
    assert [m.name for m in capped] == ["model.multi_modal_projector.linear_1"]
    assert capped[0].rank == 820 < a.components["projector"].rank
    assert capped[0].alpha == 1640
    assert all(m.alpha == 2 * m.rank for m in a.modules)
    d = a.lora_config_dict()
    for m in a.modules:
        assert peft_rank_of(m.name, d) == (m.rank, 2 * m.rank)
    assert d["lora_alpha"] == 2 * d["r"]
    assert d["use_rslora"] is False


def test_scaled_alpha_multiplier(llava):
    a = solve(llava, "1:4:1", ("rank", 8), alpha=AlphaRule("scaled", 1))
    assert all(m.alpha == m.rank for m in a.modules)
    assert a.components["projector"].alpha == 32


def test_fixed_alpha(llava):
    a = solve(llava, "1:4:1", ("rank", 8), alpha=AlphaRule("fixed", 16))
    assert {m.alpha for m in a.modules} == {16}
    assert {c.alpha for c in a.components.values()} == {16}
    d = a.lora_config_dict()
    assert d["lora_alpha"] == 16 and set(d["alpha_pattern"].values()) == {16}
    assert d["use_rslora"] is False
    assert a.ranks() == (8, 32, 8)  # the alpha rule does not change the ranks


def test_rslora_sets_use_rslora(llava):
    import peft

    a = solve(llava, "1:4:1", ("rank", 8), alpha=AlphaRule("rslora", 16))
    d = a.lora_config_dict()
    assert d["use_rslora"] is True
    assert {m.alpha for m in a.modules} == {16}
    assert peft.LoraConfig(**d).use_rslora is True
    assert a.to_dict()["alpha_rule"] == {"rule": "rslora", "value": 16}


# ---------------------------------------------------------------------------------------------- warnings


def _serving(a):
    return [w for w in a.warnings if "serving" in w]


def test_capped_and_full_training_cheaper_warnings(llava):
    a = audit(llava, (8, 2000, 8))
    by_name = {m.name: m for m in a.modules}
    l1, l2 = by_name["model.multi_modal_projector.linear_1"], by_name["model.multi_modal_projector.linear_2"]
    # capped where LoRA would cost more than full fine-tuning: 820 x 5120 = 1024 x 4096 + 4096 (bias)
    assert (l1.rank, l1.capped, l1.full_cheaper) == (820, True, True)
    assert (l2.rank, l2.capped) == (2000, False)
    assert l2.full_cheaper == (2000 * 8192 >= 4096 * 4096)
    assert a.components["projector"].capped_modules == 1
    capped = [w for w in a.warnings if "capped" in w]
    assert len(capped) == 1 and capped[0].startswith("projector:") and "linear_1" in capped[0]
    cheaper = [w for w in a.warnings if "fully" in w or "full fine-tuning" in w]
    assert len(cheaper) == 1 and cheaper[0].startswith("projector:") and "linear_1" in cheaper[0]
    assert all("\n" not in w for w in a.warnings)


def test_no_cap_warnings_when_nothing_is_capped(llava):
    a = solve(llava, "1:4:1", ("rank", 8))
    assert not any(m.capped or m.full_cheaper for m in a.modules)
    assert not [w for w in a.warnings if "capped" in w or "fully" in w]


@pytest.mark.parametrize("name, n_dead", [("llava-1.5-7b", 6), ("llava-v1.6-mistral-7b", 6), ("paligemma-3b", 3),
                                          ("demo", 6), ("qwen2-vl-2b", 0), ("blip2-opt-2.7b", 0)])
def test_dead_modules_warning(name, n_dead):
    s = structure(name)
    a = solve(s, "1:1:1", ("rank", 8))
    dead = [w for w in a.warnings if "dead" in w]
    assert len(s.dead) == n_dead
    if n_dead:
        assert len(dead) == 1 and dead[0].startswith(f"{n_dead} dead module(s) excluded")
        assert not {m.name for m in s.dead} & {m.name for m in a.modules}
    else:
        assert not dead


@pytest.mark.parametrize("ratio, expected", [("1:4:1", "vision and projector"), ("0:1:1", "projector"),
                                             ("1:0:1", "vision"), ("0:0:1", None)])
def test_serving_stack_warning(llava, ratio, expected):
    for mode in ("rank", "share"):
        a = solve(llava, ratio, ("rank", 8), mode)
        if expected is None:
            assert not _serving(a)
        else:
            (w,) = _serving(a)
            # vLLM serves LLaVA's tower and connector LoRA behind a flag (PR #31513): the note says which
            assert f"LoRA on the {expected} of llava only with --enable-tower-connector-lora" in w


def test_serving_note_for_a_family_vllm_is_not_known_to_cover():
    (w,) = _serving(solve(load_structure("blip2-opt-2.7b"), "1:4:1", ("rank", 8), "rank"))
    assert "not known here to cover blip-2" in w and "merge the adapter" in w


def test_serving_stack_warning_in_audit(llava):
    assert _serving(audit(llava, (0, 4, 8)))
    assert not _serving(audit(llava, (0, 0, 8)))


# ------------------------------------------------------------------------------------------ LoraConfig export


def _peft_rule_hits(name: str, keys) -> list[str]:
    return [k for k in keys if re.match(rf"(.*\.)?({k})$", name)]


EXPORT_CASES = [
    ("llava-1.5-7b", "1:4:1", "rank"),
    ("llava-1.5-7b", "1:4:1", "share"),  # one projector module capped: its own key
    ("llava-1.5-7b", "0:0:1", "rank"),
    ("llava-1.5-7b", "1:1:0", "rank"),
    ("llava-v1.6-mistral-7b", "2:4:1", "rank"),
    ("blip2-opt-2.7b", "1:4:1", "rank"),
    ("blip2-opt-2.7b", "1:4:1", "share"),
    ("qwen2-vl-2b", "1:4:1", "share"),
    ("qwen2.5-vl-7b", "1:8:1", "rank"),
    ("smolvlm-256m", "1:4:1", "share"),
    ("paligemma-3b", "1:4:1", "share"),
    ("demo", "1:16:1", "rank"),
]


@pytest.mark.parametrize("name, ratio, mode", EXPORT_CASES)
def test_lora_config_export(name, ratio, mode):
    import peft

    s = structure(name)
    a = solve(s, ratio, ("rank", 8), mode)
    d = lora_config_dict(a)
    check_patterns(a, d)  # raises on any mismatch

    names = [m.name for m in a.modules]
    assert d["target_modules"] == sorted(names)
    assert len(set(d["target_modules"])) == len(names)
    assert not {m.name for m in s.excluded} & set(d["target_modules"])
    assert list(d["rank_pattern"]) == list(d["alpha_pattern"])

    keys = list(d["rank_pattern"])
    for m in a.modules:
        hits = _peft_rule_hits(m.name, keys)
        assert len(hits) == 1, (m.name, hits)  # disjoint keys: exactly one per targeted module
        assert d["rank_pattern"][hits[0]] == m.rank
        assert d["alpha_pattern"][hits[0]] == m.alpha
    # keys never cross components
    for key in keys:
        assert len({m.component for m in a.modules if _peft_rule_hits(m.name, [key])}) == 1, key

    # PEFT's own resolution agrees
    from peft.utils.other import get_pattern_key

    for m in a.modules:
        assert d["rank_pattern"].get(get_pattern_key(keys, m.name), d["r"]) == m.rank

    config = peft.LoraConfig(**d)
    assert config.r == d["r"] and config.lora_alpha == d["lora_alpha"]
    assert set(config.target_modules) == set(names)
    assert config.rank_pattern == d["rank_pattern"] and config.alpha_pattern == d["alpha_pattern"]

    assert json.loads(lora_config_json(a)) == d
    assert a.lora_config().r == d["r"]
    json.dumps(a.to_dict(with_modules=True))  # the --json document is serialisable


def test_lora_config_snippet_is_valid_python_and_rebuilds_the_config(llava, monkeypatch):
    import peft

    a = solve(llava, "1:4:1", ("rank", 8), "share")
    snippet = lora_config_snippet(a)
    code = compile(snippet, "<snippet>", "exec")

    seen = {}

    class FakePeftModel:
        def get_nb_trainable_parameters(self):
            return (a.total, 7_000_000_000)

    def fake_get_peft_model(model, config):
        seen["model"], seen["config"] = model, config
        return FakePeftModel()

    monkeypatch.setattr(peft, "get_peft_model", fake_get_peft_model)
    namespace = {"model": object()}
    exec(code, namespace)  # the snippet's own assert checks the parameter count
    config = seen["config"]
    d = lora_config_dict(a)
    assert config.r == d["r"] and config.lora_alpha == d["lora_alpha"]
    assert sorted(config.target_modules) == d["target_modules"]
    assert config.rank_pattern == d["rank_pattern"] and config.alpha_pattern == d["alpha_pattern"]
    assert config.use_rslora == d["use_rslora"]


@pytest.mark.parametrize("alpha", [AlphaRule(), AlphaRule("fixed", 16), AlphaRule("rslora", 8)])
def test_lora_config_snippet_compiles_for_alpha_rules(llava, alpha):
    a = solve(llava, "2:4:1", ("rank", 8), alpha=alpha)
    compile(lora_config_snippet(a), "<snippet>", "exec")


# ------------------------------------------------------------------------------------------------- audit


def test_audit_costs_and_budget(llava):
    a = audit(llava, (0, 16, 4), budget=Budget("rank", 8))
    assert a.ranks() == (0, 16, 4)
    assert a.total == 16 * LLAVA_PROJECTOR + 4 * LLAVA_LANGUAGE
    assert a.components["vision"].modules == 0
    assert a.budget == rank_budget(llava, 8)
    check_patterns(a, a.lora_config_dict())


@pytest.mark.parametrize("ranks", [(0, 0, 0), (4.5, 16, 4), (-1, 16, 4), (4, 16)])
def test_audit_rejects_bad_ranks(llava, ranks):
    with pytest.raises(InputError) as excinfo:
        audit(llava, ranks)
    assert str(excinfo.value).startswith("ranks:")
    assert "\n" not in str(excinfo.value)


# ------------------------------------------------------------------------------------------ determinism


@pytest.mark.parametrize("name, ratio, mode", [("llava-1.5-7b", "1:4:1", "rank"), ("paligemma-3b", "1:4:1", "share"),
                                               ("blip2-opt-2.7b", "0.5:3:1", "share")])
def test_same_input_same_output(name, ratio, mode):
    first = solve(structure(name), ratio, ("rank", 8), mode)
    again = solve(structure(name), ratio, ("rank", 8), mode)
    fresh = solve(load_structure(name), ratio, ("rank", 8), mode)  # a newly built structure
    for other in (again, fresh):
        assert other.to_dict(with_modules=True) == first.to_dict(with_modules=True)
        assert json.dumps(other.lora_config_dict()) == json.dumps(first.lora_config_dict())  # key order too
        assert lora_config_snippet(other) == lora_config_snippet(first)
