"""Model structure from a config alone (toolkit.calculator.structure, toolkit.calculator.architectures).

All offline: bundled presets, configs written to tmp_path, and a Hub id with the Hub forced offline.
Expected LoRA costs are derived here by hand from the config numbers, not copied from the code's output.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from tests.helpers.tiny import preset_structure
from toolkit.calculator.architectures import REGISTRY, ComponentPatterns, heuristic_component, module_kind, spec_for
from toolkit.calculator.structure import PRESET_DIR, load_structure, presets
from toolkit.errors import CmbaError, InputError, ModelLoadError, UnsupportedModelError

COMPONENTS = ("vision", "projector", "language")

FAMILIES = {
    "demo": "llava",
    "llava-1.5-7b": "llava",
    "llava-1.5-13b": "llava",
    "llava-v1.6-mistral-7b": "llava_next",
    "blip2-opt-2.7b": "blip-2",
    "qwen2-vl-2b": "qwen2_vl",
    "qwen2.5-vl-7b": "qwen2_5_vl",
    "smolvlm-256m": "idefics3",
    "paligemma-3b": "paligemma",
}

# Module-path prefixes per family (DESIGN.md "Model structure"; transformers v5 names).
_LLAVA_PREFIXES = {"vision": ("model.vision_tower.",), "projector": ("model.multi_modal_projector.",),
                   "language": ("model.language_model.",)}
PREFIXES = {
    "llava": _LLAVA_PREFIXES,
    "llava_next": _LLAVA_PREFIXES,
    "paligemma": _LLAVA_PREFIXES,
    "blip-2": {"vision": ("vision_model.",), "projector": ("qformer.", "language_projection"),
               "language": ("language_model.",)},
    "qwen2_vl": {"vision": ("model.visual.blocks.",), "projector": ("model.visual.merger.",),
                 "language": ("model.language_model.",)},
    "qwen2_5_vl": {"vision": ("model.visual.blocks.",), "projector": ("model.visual.merger.",),
                   "language": ("model.language_model.",)},
    "idefics3": {"vision": ("model.vision_model.",), "projector": ("model.connector.",),
                 "language": ("model.text_model.",)},
}


structure = preset_structure  # each preset loaded once per session, for every calculator module
pytestmark = pytest.mark.xdist_group("presets")
"""under pytest-xdist the calculator modules that load presets run in one process, which loads each preset once"""


def preset_config(name: str) -> dict:
    return json.loads((PRESET_DIR / presets()[name]["file"]).read_text())


def assert_one_line(exc: BaseException, prefix: str = "model:") -> str:
    message = str(exc)
    assert isinstance(exc, CmbaError)
    assert "\n" not in message and message.startswith(prefix), message
    return message


# ------------------------------------------------------------------------------------------------ presets


def test_design_presets_are_bundled():
    table = presets()
    required = {"demo", "llava-1.5-7b", "llava-1.5-13b", "llava-v1.6-mistral-7b", "blip2-opt-2.7b", "qwen2-vl-2b",
                "qwen2.5-vl-7b", "smolvlm-256m", "paligemma-3b"}
    assert required <= set(table)
    for name, entry in table.items():
        assert (PRESET_DIR / entry["file"]).is_file(), name
        assert entry["description"]
        assert "model_type" in preset_config(name)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_preset_loads_and_classifies(name):
    s = structure(name)
    family = FAMILIES[name]
    assert s.family == family
    assert s.source == "preset" and s.model_id == name
    assert s.hub_id == presets()[name]["hub_id"]
    assert spec_for(s.model_type) is not None
    for comp in COMPONENTS:
        mods = s.linears(comp)
        assert mods, f"{name}: no {comp} Linear layers"
        assert s.cost_per_rank(comp) == sum(m.in_features + m.out_features for m in mods) > 0
        assert all(m.name.startswith(PREFIXES[family][comp]) for m in mods), [m.name for m in mods][:3]
        assert s.component_params[comp] > 0
        assert s.kinds_available(comp)[0] == "all"
    assert sum(s.component_params.values()) <= s.total_params
    assert {m.component for m in s.modules} <= {*COMPONENTS, "excluded"}
    assert {m.kind for m in s.modules} <= {"attention", "mlp"}
    assert len({m.name for m in s.modules}) == len(s.modules)
    # lm_head: present in the model, excluded, never a LoRA target
    heads = [m for m in s.modules if m.name.split(".")[-1] == "lm_head"]
    assert len(heads) == 1
    assert heads[0].component == "excluded" and "lm_head" in heads[0].excluded_reason
    assert all(m.excluded_reason for m in s.excluded)
    assert not any(m.name.endswith("lm_head") for c in COMPONENTS for m in s.linears(c))


def test_every_registry_family_has_a_preset():
    covered = {structure(n).model_type for n in presets()}  # the pilot presets: tests/training/test_families.py
    for spec in REGISTRY:
        assert covered & set(spec.model_types), spec.family


# ------------------------------------------------------------------------------- costs derived by hand


def _clip_layer(h: int, i: int) -> int:
    """q, k, v, out (h -> h) + fc1 (h -> i) + fc2 (i -> h): LoRA cost per unit rank is in + out."""
    return 4 * (h + h) + 2 * (h + i)


def _decoder_layer(h: int, i: int, heads: int, kv_heads: int, head_dim: int) -> int:
    """Llama-style: q, k, v, o with grouped KV, then gate, up (h -> i) and down (i -> h)."""
    q = h + heads * head_dim
    kv = 2 * (h + kv_heads * head_dim)
    o = heads * head_dim + h
    return q + kv + o + 3 * (h + i)


def _text(tc) -> int:
    head_dim = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads
    kv = getattr(tc, "num_key_value_heads", None) or tc.num_attention_heads
    layer = _decoder_layer(tc.hidden_size, tc.intermediate_size, tc.num_attention_heads, kv, head_dim)
    return tc.num_hidden_layers * layer


def expected_costs(name: str) -> dict[str, int]:
    c = structure(name).config
    raw = preset_config(name)
    family = FAMILIES[name]
    vc, tc = c.vision_config, c.text_config
    if family in ("llava", "llava_next"):
        # hidden_states[vision_feature_layer] (-2): the encoder's last layer never gets a gradient
        live = vc.num_hidden_layers + 1 + raw["vision_feature_layer"]
        assert live == vc.num_hidden_layers - 1
        return {
            "vision": live * _clip_layer(vc.hidden_size, vc.intermediate_size),
            "projector": (vc.hidden_size + tc.hidden_size) + (tc.hidden_size + tc.hidden_size),  # 2-layer MLP
            "language": _text(tc),
        }
    if family == "paligemma":
        return {
            "vision": vc.num_hidden_layers * _clip_layer(vc.hidden_size, vc.intermediate_size),  # head is dead
            "projector": vc.hidden_size + raw["projection_dim"],
            "language": _text(tc),
        }
    if family == "idefics3":
        scale = raw["scale_factor"]
        return {
            "vision": vc.num_hidden_layers * _clip_layer(vc.hidden_size, vc.intermediate_size),
            "projector": vc.hidden_size * scale * scale + tc.hidden_size,  # pixel shuffle then one Linear
            "language": _text(tc),
        }
    if family == "qwen2_vl":
        e, merged = vc.embed_dim, vc.embed_dim * vc.spatial_merge_size**2
        block = (e + 3 * e) + (e + e) + 2 * (e + e * vc.mlp_ratio)  # fused qkv, proj, fc1, fc2
        return {
            "vision": vc.depth * block,
            "projector": (merged + merged) + (merged + tc.hidden_size),
            "language": _text(tc),
        }
    if family == "qwen2_5_vl":
        h, merged = vc.hidden_size, vc.hidden_size * vc.spatial_merge_size**2
        block = (h + 3 * h) + (h + h) + 3 * (h + vc.intermediate_size)  # qkv, proj, gated MLP
        return {
            "vision": vc.depth * block,
            "projector": (merged + merged) + (merged + vc.out_hidden_size),
            "language": _text(tc),
        }
    if family == "blip-2":
        qc = c.qformer_config
        qh, qi = qc.hidden_size, qc.intermediate_size
        n_cross = len(range(0, qc.num_hidden_layers, qc.cross_attention_frequency))
        self_attn_and_ffn = qc.num_hidden_layers * (4 * (qh + qh) + (qh + qi) + (qi + qh))
        cross = n_cross * ((qh + qh) + 2 * (qc.encoder_hidden_size + qh) + (qh + qh))
        vh = vc.hidden_size
        return {
            "vision": vc.num_hidden_layers * ((vh + 3 * vh) + (vh + vh) + 2 * (vh + vc.intermediate_size)),
            "projector": self_attn_and_ffn + cross + (qh + tc.hidden_size),  # + language_projection
            "language": tc.num_hidden_layers * (4 * (2 * tc.hidden_size) + 2 * (tc.hidden_size + tc.ffn_dim)),
        }
    raise AssertionError(family)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_component_costs_match_hand_derivation(name):
    s = structure(name)
    expected = expected_costs(name)
    assert {c: s.cost_per_rank(c) for c in COMPONENTS} == expected


def test_llava_reference_figure_by_hand():
    s = structure("llava-1.5-7b")
    vc = s.config.vision_config
    dead_layer = _clip_layer(vc.hidden_size, vc.intermediate_size)
    assert sum(m.cost_per_rank for m in s.dead) == dead_layer
    assert s.cost_per_rank("vision") + dead_layer == 442_368  # DESIGN.md, dead layer included
    assert (s.cost_per_rank("projector"), s.cost_per_rank("language")) == (13_312, 2_498_560)


def test_paligemma_siglip_head_is_dead():
    s = structure("paligemma-3b")
    assert s.dead and all(m.name.startswith("model.vision_tower.head.") for m in s.dead)
    assert not [m for m in s.linears("vision") if ".head." in m.name]


@pytest.mark.parametrize("name", ["llava-1.5-7b", "qwen2-vl-2b", "blip2-opt-2.7b"])
def test_attention_and_mlp_kinds_partition_components(name):
    s = structure(name)
    for comp in COMPONENTS:
        att, mlp = s.linears(comp, "attention"), s.linears(comp, "mlp")
        assert len(att) + len(mlp) == len(s.linears(comp))
        assert s.cost_per_rank(comp, "attention") + s.cost_per_rank(comp, "mlp") == s.cost_per_rank(comp)
    lang_att = {m.name.split(".")[-1] for m in s.linears("language", "attention")}
    assert lang_att == {"q_proj", "k_proj", "v_proj", "o_proj"} or lang_att == {"q_proj", "k_proj", "v_proj",
                                                                                "out_proj"}


def test_module_kind():
    assert module_kind("model.language_model.layers.0.self_attn.q_proj") == "attention"
    assert module_kind("qformer.encoder.layer.0.crossattention.attention.key") == "attention"
    assert module_kind("model.visual.blocks.0.attn.qkv") == "attention"
    assert module_kind("model.language_model.layers.0.mlp.down_proj") == "mlp"
    assert module_kind("model.multi_modal_projector.linear_1") == "mlp"


# ------------------------------------------------------------------------------------------ local folders


def test_local_folder_with_config_json(tmp_path):
    shutil.copy(PRESET_DIR / "demo.json", tmp_path / "config.json")
    local = load_structure(str(tmp_path))
    preset = structure("demo")
    assert local.source == "local" and local.hub_id is None
    assert local.family == "llava"
    assert [(m.name, m.in_features, m.out_features, m.component) for m in local.modules] == [
        (m.name, m.in_features, m.out_features, m.component) for m in preset.modules
    ]
    assert local.total_params == preset.total_params
    # the config.json file itself works too
    assert load_structure(str(tmp_path / "config.json")).modules == local.modules


def test_folder_without_config_json(tmp_path):
    with pytest.raises(ModelLoadError) as excinfo:
        load_structure(str(tmp_path))
    message = assert_one_line(excinfo.value)
    assert "config.json" in message and str(tmp_path) in message


def test_missing_local_path(tmp_path):
    with pytest.raises(CmbaError) as excinfo:
        load_structure(str(tmp_path / "nope"))
    assert_one_line(excinfo.value)


def test_malformed_json_names_the_line(tmp_path):
    (tmp_path / "config.json").write_text('{\n  "model_type": "llava",\n  "vocab_size": 512,,\n  "x": 1\n}\n')
    with pytest.raises(ModelLoadError) as excinfo:
        load_structure(str(tmp_path))
    message = assert_one_line(excinfo.value)
    assert "not valid JSON" in message and "line 3" in message


def test_json_that_is_not_an_object(tmp_path):
    (tmp_path / "config.json").write_text("[1, 2, 3]")
    with pytest.raises(ModelLoadError) as excinfo:
        load_structure(str(tmp_path))
    assert "JSON object" in assert_one_line(excinfo.value)


def test_json_without_model_type(tmp_path):
    config = preset_config("demo")
    del config["model_type"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as excinfo:
        load_structure(str(tmp_path))
    assert "model_type" in assert_one_line(excinfo.value)


def test_unknown_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no_such_vlm_xyz", "hidden_size": 8}))
    with pytest.raises(UnsupportedModelError) as excinfo:
        load_structure(str(tmp_path))
    assert "no_such_vlm_xyz" in assert_one_line(excinfo.value)


@pytest.mark.parametrize("model", ["llava-7b", "not a model", "", "   "])
def test_unknown_name_lists_presets(model):
    with pytest.raises(InputError) as excinfo:
        load_structure(model)
    message = assert_one_line(excinfo.value)
    if model.strip():
        assert "llava-1.5-7b" in message  # the presets are listed


# -------------------------------------------------------------------------------------------- Hub, offline


def test_hub_id_offline_fails_fast_with_a_hint(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    # the cache path was computed at import time from HF_HOME: point it at the empty folder too
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as excinfo:
        load_structure("llava-hf/llava-1.5-7b-hf")
    elapsed = time.monotonic() - start
    message = assert_one_line(excinfo.value)
    assert "llava-hf/llava-1.5-7b-hf" in message
    assert "preset" in message and "local folder" in message
    assert elapsed < 10, f"offline failure took {elapsed:.1f} s"


# ------------------------------------------------------------------------------ heuristics and patterns


@pytest.mark.parametrize(
    "name, component",
    [
        ("model.vision_tower.encoder.layers.0.self_attn.q_proj", "vision"),
        ("vision_model.encoder.layers.3.mlp.fc1", "vision"),
        ("model.visual.blocks.0.attn.qkv", "vision"),
        ("model.multi_modal_projector.linear_1", "projector"),
        ("model.mm_projector.0", "projector"),
        ("model.visual.merger.mlp.0", "projector"),  # inside the vision tower, but a projector
        ("qformer.encoder.layer.0.attention.attention.query", "projector"),
        ("language_projection", "projector"),
        ("model.connector.modality_projection.proj", "projector"),
        ("model.language_model.layers.0.mlp.up_proj", "language"),
        ("model.text_model.layers.1.self_attn.o_proj", "language"),
        ("lm_head", "excluded"),
        ("model.layers.0.self_attn.q_proj", "excluded"),  # a plain LLM has no named language part
        ("model.visionary.proj", "excluded"),  # whole path segments only
    ],
)
def test_heuristic_component(name, component):
    assert heuristic_component(name) == component


@pytest.mark.parametrize("model_type, extra", [("vipllava", {"vision_feature_layers": [-2, -5]}),
                                               ("llava_next_video", {})])  # llava_onevision is registered now
def test_unknown_family_falls_back_to_heuristics(tmp_path, model_type, extra):
    assert spec_for(model_type) is None  # really not in the registry
    config = preset_config("demo")
    config["model_type"] = model_type
    if "vision_feature_layers" in extra:
        config.pop("vision_feature_layer")
    config.update(extra)
    (tmp_path / "config.json").write_text(json.dumps(config))
    try:
        s = load_structure(str(tmp_path))
    except (UnsupportedModelError, ModelLoadError) as exc:  # pragma: no cover - depends on transformers
        pytest.skip(f"transformers cannot build {model_type} from the demo config here: {exc}")
    assert s.family == "heuristic"
    for comp in COMPONENTS:
        mods = s.linears(comp)
        assert mods and all(m.name.startswith(_LLAVA_PREFIXES[comp]) for m in mods), comp
    demo = structure("demo")
    # same vision tower and decoder as the demo; the LLaVA-style feature-layer rule applies to unregistered
    # families too (both read hidden_states[-2] at most), so the same last vision layer is dead
    assert sorted(m.name for m in s.excluded) == sorted(["lm_head"] + [m.name for m in demo.dead])
    assert len(s.linears("language")) == len(demo.linears("language"))
    assert len(s.linears("vision")) == len(demo.linears("vision"))


def test_model_without_vision_part_suggests_patterns(tmp_path):
    config = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 128}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError) as excinfo:
        load_structure(str(tmp_path))
    message = assert_one_line(excinfo.value)
    assert "vision" in message and "--patterns" in message


def test_custom_patterns_override_registry():
    patterns = ComponentPatterns.parse(
        r"vision=model\.vision_tower,model\.multi_modal_projector\.linear_1;"
        r"projector=model\.multi_modal_projector\.linear_2;language=model\.language_model"
    )
    s = load_structure("demo", patterns=patterns)
    assert s.family == "custom patterns"
    assert [m.name for m in s.linears("projector")] == ["model.multi_modal_projector.linear_2"]
    assert "model.multi_modal_projector.linear_1" in {m.name for m in s.linears("vision")}
    assert [m.name for m in s.excluded if m.name.endswith("lm_head")] == ["lm_head"]
    registry = structure("demo")
    assert len(s.linears("language")) == len(registry.linears("language"))


def test_custom_patterns_leave_unmatched_modules_excluded():
    patterns = ComponentPatterns.parse(
        r"vision=model\.vision_tower;projector=model\.multi_modal_projector\.linear_2;language=model\.language_model"
    )
    s = load_structure("demo", patterns=patterns)
    (l1,) = [m for m in s.modules if m.name == "model.multi_modal_projector.linear_1"]
    assert l1.component == "excluded" and l1.excluded_reason


def test_patterns_parse():
    p = ComponentPatterns.parse(" vision = a\\.b , c ; projector=d ; language=e ")
    assert (p.vision, p.projector, p.language) == (("a\\.b", "c"), ("d",), ("e",))
    assert p.component_of("a.b.layers.0") == "vision"
    assert p.component_of("a.bc") == "excluded"  # prefix ends at a path segment
    assert p.component_of("d") == "projector"
    assert p.component_of("zzz") == "excluded"


@pytest.mark.parametrize(
    "text, prefix",
    [
        ("vision=a;projector=b", "patterns:"),  # language missing
        ("vision=a;projector=b;text=c", "patterns:"),
        ("vision=(;projector=b;language=c", "patterns.vision:"),
        ("", "patterns:"),
    ],
)
def test_patterns_parse_errors(text, prefix):
    with pytest.raises(InputError) as excinfo:
        ComponentPatterns.parse(text)
    assert_one_line(excinfo.value, prefix)


def test_custom_patterns_keep_the_dead_layer_rule():
    patterns = ComponentPatterns.parse(
        r"vision=model\.vision_tower;projector=model\.multi_modal_projector;language=model\.language_model"
    )
    custom = load_structure("llava-1.5-7b", patterns=patterns)
    assert custom.family == "custom patterns"
    assert [m.name for m in custom.dead] == [m.name for m in structure("llava-1.5-7b").dead]
    assert len(custom.dead) == 6
