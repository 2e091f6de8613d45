"""Tiny configs of every supported VLM family, their folders, real models and inputs.

`TINY_CONFIGS` maps a registry family to a config dict exactly as it would appear in a config.json. The
shapes are small (hidden sizes 24-48, 2-3 layers, vocabulary 128) so a real float32 model builds in
milliseconds on CPU, and deliberately uneven (vision width != text width, fewer key/value heads than query
heads, explicit head_dim != hidden / heads, MLP widths unlike either) so that a counting mistake that swaps
in and out features, or assumes square projections, changes the numbers.

`VARIANTS` adds a few real-world variations of a family (BLIP-2 with Flan-T5, BLIP-2 with the Q-Former text
branch, PaliGemma without the SigLIP head); `MODELS` lists every key, and every helper below accepts either.

Every config both loads through `toolkit.load_structure` (meta device) and runs a forward and backward pass
as a real model (`build_tiny_model` + `tiny_inputs`); tests/calculator/test_dead_modules.py relies on the latter.

Helpers: `tiny_config_dict(key)`, `write_model_dir(folder, config)`, `tiny_model_dir(tmp_path_factory, key)`,
`tiny_structure(tiny_dirs, key)` (cached `load_structure`; `tiny_dirs` is the session fixture of tests/conftest.py),
`preset_structure(name)` (the same cache for a bundled preset),
`transformers_config(key)`, `build_tiny_model(key)`, `tiny_inputs(key, model)` and `lora_gradients(key)`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

IMAGE_TOKEN = 120
"""image placeholder id shared by every tiny config (inside the 128-token vocabulary)"""
VISION_START, VISION_END = 122, 123
"""Qwen2-VL / Qwen2.5-VL vision start / end markers"""

TINY_CONFIGS: dict[str, dict] = {
    # CLIP (3 layers) read at vision_feature_layer=-2, so its last layer is dead; 2-layer MLP projector; Llama
    # text with 2 KV heads of 4.
    "llava": {
        "model_type": "llava",
        "image_token_index": IMAGE_TOKEN,
        "projector_hidden_act": "gelu",
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "image_seq_length": 16,
        "tie_word_embeddings": False,
        "vision_config": {
            "model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 56,
            "num_attention_heads": 4, "num_hidden_layers": 3, "image_size": 16, "patch_size": 4,
            "projection_dim": 24,
        },
        "text_config": {
            "model_type": "llama", "hidden_size": 48, "intermediate_size": 80, "num_attention_heads": 4,
            "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 128, "max_position_embeddings": 128,
            "pad_token_id": 0,
        },
    },
    # Feature layers as a list ([-3, -2] -> layer 2 dead, projector input 2 x 24); anyres with a 16x32 pinpoint
    # (1 base + 2 crops); Mistral text with one KV head and head_dim 12 != 40 / 4.
    "llava_next": {
        "model_type": "llava_next",
        "image_token_index": IMAGE_TOKEN,
        "projector_hidden_act": "gelu",
        "vision_feature_layer": [-3, -2],
        "vision_feature_select_strategy": "default",
        "image_grid_pinpoints": [[16, 32], [32, 16]],
        "tie_word_embeddings": False,
        "vision_config": {
            "model_type": "clip_vision_model", "hidden_size": 24, "intermediate_size": 40,
            "num_attention_heads": 2, "num_hidden_layers": 3, "image_size": 16, "patch_size": 4,
            "projection_dim": 20,
        },
        "text_config": {
            "model_type": "mistral", "hidden_size": 40, "intermediate_size": 72, "num_attention_heads": 4,
            "num_key_value_heads": 1, "head_dim": 12, "num_hidden_layers": 2, "vocab_size": 128,
            "max_position_embeddings": 256, "sliding_window": None, "pad_token_id": 0,
        },
    },
    # BLIP-2 needs image_token_index to place its num_query_tokens outputs; cross-attention in every Q-Former
    # layer; OPT text.
    "blip-2": {
        "model_type": "blip-2",
        "num_query_tokens": 6,
        "image_token_index": IMAGE_TOKEN,
        "use_decoder_only_language_model": True,
        "vision_config": {
            "model_type": "blip_2_vision_model", "hidden_size": 32, "intermediate_size": 52,
            "num_attention_heads": 4, "num_hidden_layers": 2, "image_size": 16, "patch_size": 4,
            "qkv_bias": True,
        },
        "qformer_config": {
            "model_type": "blip_2_qformer", "hidden_size": 24, "intermediate_size": 44, "num_attention_heads": 2,
            "num_hidden_layers": 2, "cross_attention_frequency": 1, "encoder_hidden_size": 32,
            "vocab_size": 128, "max_position_embeddings": 64,
        },
        "text_config": {
            "model_type": "opt", "hidden_size": 40, "ffn_dim": 68, "num_attention_heads": 4,
            "num_hidden_layers": 2, "vocab_size": 128, "max_position_embeddings": 128, "word_embed_proj_dim": 40,
            "pad_token_id": 1, "bos_token_id": 2, "eos_token_id": 2,
        },
    },
    # The merger (projector) lives inside model.visual; embed_dim 32 -> merged 4 x 32 -> 48 text hidden.
    "qwen2_vl": {
        "model_type": "qwen2_vl",
        "image_token_id": IMAGE_TOKEN, "video_token_id": 121, "vision_start_token_id": VISION_START, "vision_end_token_id": VISION_END,
        "vision_config": {
            "depth": 2, "embed_dim": 32, "hidden_size": 48, "mlp_ratio": 3, "num_heads": 4, "in_channels": 3,
            "patch_size": 2, "spatial_merge_size": 2, "temporal_patch_size": 2,
        },
        "text_config": {
            "hidden_size": 48, "intermediate_size": 72, "num_attention_heads": 4, "num_key_value_heads": 2,
            "num_hidden_layers": 2, "vocab_size": 128, "max_position_embeddings": 256,
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 2, 2], "rope_theta": 10000.0},
            "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
        },
    },
    # Window attention in block 0, full attention in block 1 (window_size 8 = 2x2 merged tokens per window).
    "qwen2_5_vl": {
        "model_type": "qwen2_5_vl",
        "image_token_id": IMAGE_TOKEN, "video_token_id": 121, "vision_start_token_id": VISION_START, "vision_end_token_id": VISION_END,
        "vision_config": {
            "depth": 2, "hidden_size": 32, "intermediate_size": 56, "out_hidden_size": 40, "num_heads": 4,
            "in_channels": 3, "patch_size": 2, "spatial_merge_size": 2, "temporal_patch_size": 2,
            "window_size": 8, "fullatt_block_indexes": [1],
        },
        "text_config": {
            "hidden_size": 40, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 1,
            "num_hidden_layers": 2, "vocab_size": 128, "max_position_embeddings": 256,
            "rope_parameters": {"rope_type": "default", "mrope_section": [1, 2, 2], "rope_theta": 10000.0},
            "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
        },
    },
    # Pixel shuffle (scale 2): connector 4 x 24 -> 40.
    "idefics3": {
        "model_type": "idefics3",
        "image_token_id": IMAGE_TOKEN,
        "scale_factor": 2,
        "pad_token_id": 0,
        "vision_config": {
            "model_type": "idefics3_vision", "hidden_size": 24, "intermediate_size": 44, "num_attention_heads": 2,
            "num_hidden_layers": 2, "image_size": 16, "patch_size": 4,
        },
        "text_config": {
            "model_type": "llama", "hidden_size": 40, "intermediate_size": 60, "num_attention_heads": 4,
            "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 128, "max_position_embeddings": 128,
            "pad_token_id": 0,
        },
    },
    # Like Idefics3 with the text narrower than the vision tower (24 < 32) and 3 text layers.
    "smolvlm": {
        "model_type": "smolvlm",
        "image_token_id": IMAGE_TOKEN,
        "scale_factor": 2,
        "pad_token_id": 0,
        "vision_config": {
            "model_type": "smolvlm_vision", "hidden_size": 32, "intermediate_size": 48, "num_attention_heads": 4,
            "num_hidden_layers": 2, "image_size": 16, "patch_size": 4,
        },
        "text_config": {
            "model_type": "llama", "hidden_size": 24, "intermediate_size": 64, "num_attention_heads": 2,
            "num_key_value_heads": 1, "num_hidden_layers": 3, "vocab_size": 128, "max_position_embeddings": 128,
            "pad_token_id": 0,
        },
    },
    # SigLIP without "vision_use_head": the pooling head is built (SigLIP's default) and is dead; Gemma text
    # with one KV head and head_dim 16 (q_proj 40 -> 64).
    "paligemma": {
        "model_type": "paligemma",
        "image_token_index": IMAGE_TOKEN,
        "projection_dim": 40,
        "hidden_size": 40,
        "vocab_size": 128,
        "pad_token_id": 0,
        "vision_config": {
            "model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 52,
            "num_attention_heads": 4, "num_hidden_layers": 2, "image_size": 16, "patch_size": 4,
        },
        "text_config": {
            "model_type": "gemma", "hidden_size": 40, "intermediate_size": 68, "num_attention_heads": 4,
            "num_key_value_heads": 1, "head_dim": 16, "num_hidden_layers": 2, "vocab_size": 128,
            "max_position_embeddings": 128, "pad_token_id": 0,
        },
    },
}

FAMILIES = tuple(TINY_CONFIGS)

VARIANTS: dict[str, tuple[str, dict]] = {
    # BLIP-2 with a Flan-T5 encoder-decoder language model (Salesforce/blip2-flan-t5-*): T5 names its
    # attention blocks `SelfAttention` / `EncDecAttention` and its MLP `DenseReluDense.wi_0/wi_1/wo`.
    "blip-2+flan-t5": ("blip-2", {
        "use_decoder_only_language_model": False,
        "text_config": {
            "model_type": "t5", "d_model": 40, "d_kv": 12, "d_ff": 68, "num_heads": 4, "num_layers": 2,
            "num_decoder_layers": 2, "vocab_size": 128, "feed_forward_proj": "gated-gelu",
            "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1, "tie_word_embeddings": False,
        },
    }),
    # Q-Former built with its text branch (as in Salesforce/blip2-itm-vit-g): BERT embeddings plus a text
    # FFN (`intermediate.dense`, `output.dense`) per layer next to the query FFN.
    "blip-2+qformer-text": ("blip-2", {
        "qformer_config": {**TINY_CONFIGS["blip-2"]["qformer_config"], "use_qformer_text_input": True},
    }),
    # LLaVA-style model with a SigLIP tower (LLaVA-OneVision, many pilots): no CLS token, so every patch is read
    # ("full"); SigLIP builds its pooling head, which the projector never reads (dead, like PaliGemma's).
    "llava+siglip": ("llava", {
        "vision_feature_select_strategy": "full",
        "vision_config": {
            "model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 52,
            "num_attention_heads": 4, "num_hidden_layers": 3, "image_size": 16, "patch_size": 4,
        },
    }),
    # PaliGemma's own default vision tower: SigLIP without the pooling head, so nothing is dead.
    "paligemma-no-head": ("paligemma", {
        "vision_config": {**TINY_CONFIGS["paligemma"]["vision_config"], "vision_use_head": False},
    }),
}
"""variant name -> (registry family, top-level keys replaced in that family's tiny config)"""

MODELS = FAMILIES + tuple(VARIANTS)
"""every tiny model key: a family name (its `TINY_CONFIGS` entry) or a variant name"""

PILOTS: dict[str, dict] = {
    # The transformers-native InternVL: InternViT (`encoder.layer.N`) read at -1, pixel shuffle 0.5 -> 4 tokens.
    "internvl": {
        "model_type": "internvl", "image_token_id": IMAGE_TOKEN, "downsample_ratio": 0.5,
        "projector_hidden_act": "gelu", "vision_feature_layer": -1, "vision_feature_select_strategy": "default",
        "image_seq_length": 4,
        "vision_config": {
            "model_type": "internvl_vision", "hidden_size": 32, "intermediate_size": 48, "num_attention_heads": 4,
            "num_hidden_layers": 2, "image_size": [16, 16], "patch_size": [4, 4], "use_mean_pooling": True,
        },
        "text_config": {
            "model_type": "qwen2", "hidden_size": 40, "intermediate_size": 64, "num_attention_heads": 4,
            "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 128, "max_position_embeddings": 128,
            "pad_token_id": 0,
        },
    },
    # LLaVA-OneVision: SigLIP (pooling head built, so dead) read at -1 in full, anyres crops; Qwen2 text.
    "llava_onevision": {
        "model_type": "llava_onevision", "image_token_index": IMAGE_TOKEN, "video_token_index": 121,
        "projector_hidden_act": "gelu", "vision_feature_layer": -1, "vision_feature_select_strategy": "full",
        "vision_aspect_ratio": "anyres_max_9", "image_grid_pinpoints": [[16, 32], [32, 16]],
        "tie_word_embeddings": False,
        "vision_config": {
            "model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 52,
            "num_attention_heads": 4, "num_hidden_layers": 2, "image_size": 16, "patch_size": 4,
        },
        "text_config": {
            "model_type": "qwen2", "hidden_size": 40, "intermediate_size": 64, "num_attention_heads": 4,
            "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 128, "max_position_embeddings": 256,
            "pad_token_id": 0,
        },
    },
    # Gemma 3: SigLIP (head built: dead) -> a projector without Linear layers (a weight matrix) -> Gemma 3 text.
    "gemma3": {
        "model_type": "gemma3", "image_token_index": IMAGE_TOKEN, "boi_token_index": 121, "eoi_token_index": 122,
        "mm_tokens_per_image": 4,
        "vision_config": {
            "model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 52,
            "num_attention_heads": 4, "num_hidden_layers": 2, "image_size": 16, "patch_size": 4,
        },
        "text_config": {
            "model_type": "gemma3_text", "hidden_size": 40, "intermediate_size": 64, "num_attention_heads": 4,
            "num_key_value_heads": 1, "head_dim": 16, "num_hidden_layers": 2, "vocab_size": 128,
            "max_position_embeddings": 128, "pad_token_id": 0, "sliding_window": 8,
        },
    },
}
"""tiny configs of the pilot presets' families that are not in the registry's core set (kept out of MODELS)"""


def three_part_presets() -> list[str]:
    """Bundled presets whose three components can all get a LoRA (not Gemma 3: its projector is no Linear)."""
    from toolkit.calculator.architectures import NO_LINEAR
    from toolkit.calculator.structure import PRESET_DIR, presets

    table = presets()
    kinds = {n: json.loads((PRESET_DIR / e["file"]).read_text())["model_type"] for n, e in table.items()}
    return [n for n in table if not any((kinds[n], c) in NO_LINEAR for c in ("vision", "projector", "language"))]


def family_of(key: str) -> str:
    """The registry family of a tiny model key (`blip-2+flan-t5` -> `blip-2`)."""
    return VARIANTS[key][0] if key in VARIANTS else key


def tiny_config_dict(key: str) -> dict:
    """A fresh copy of the config.json content of a family or variant (safe to mutate)."""
    if key in VARIANTS:
        family, overrides = VARIANTS[key]
        return copy.deepcopy({**TINY_CONFIGS[family], **overrides})
    return copy.deepcopy(TINY_CONFIGS[key] if key in TINY_CONFIGS else PILOTS[key])


def write_model_dir(folder: Path, config: dict) -> Path:
    """Write `config` as folder/config.json and return the folder (what `load_structure` takes)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, family: str) -> Path:
    """A fresh folder holding the tiny config.json of `family` (or of a variant name)."""
    return write_model_dir(tmp_path_factory.mktemp(f"tiny-{family}"), tiny_config_dict(family))


_STRUCTURES: dict[str, object] = {}
_PRESETS: dict[str, object] = {}


def preset_structure(name: str):
    """`load_structure` of a bundled preset (a full-size architecture on the meta device, ~0.2 s), cached for the
    session and shared by the calculator test modules (ModelStructure is frozen: treat it as read-only)."""
    if name not in _PRESETS:
        from toolkit import load_structure

        _PRESETS[name] = load_structure(name)
    return _PRESETS[name]


def tiny_structure(tiny_dirs: dict[str, Path], key: str):
    """`load_structure` of a tiny folder, cached for the session (ModelStructure is frozen)."""
    if key not in _STRUCTURES:
        from toolkit import load_structure

        _STRUCTURES[key] = load_structure(str(tiny_dirs[key]))
    return _STRUCTURES[key]


def transformers_config(key: str, **overrides):
    """The transformers config object of a family or variant (built the way `load_structure` builds it).

    `overrides` replace top-level keys of the config dict (e.g. `vision_feature_layer=-1`).
    """
    import warnings

    from transformers import AutoConfig

    data = {**tiny_config_dict(key), **copy.deepcopy(overrides)}
    model_type = data.pop("model_type")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoConfig.for_model(model_type, **data)


def build_tiny_model(key: str, **overrides):
    """The real model of a family or variant: CPU, float32, random weights from `torch.manual_seed(0)`, eval.

    `overrides` as in `transformers_config`. BLIP-2's zero-initialised query tokens are randomised (below).
    """
    import warnings

    import torch
    from transformers import AutoModelForImageTextToText

    config = transformers_config(key, **overrides)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    if hasattr(model, "query_tokens"):
        # BLIP-2 initialises its learned Q-Former queries to zeros; trained checkpoints never have that, and
        # an all-zero input makes the first Q-Former layer's gradients vanish (a fake "dead" module).
        with torch.no_grad():
            model.query_tokens.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(2))
    projector = getattr(getattr(model, "model", model), "multi_modal_projector", None)
    if hasattr(projector, "mm_input_projection_weight"):
        # Gemma 3 initialises its projection matrix to zeros, which blocks every gradient to the vision tower
        with torch.no_grad():
            projector.mm_input_projection_weight.normal_(0.0, 0.2, generator=torch.Generator().manual_seed(3))
    return model.eval()


def tiny_inputs(key: str, model) -> dict:
    """Real forward inputs for `model` (a `build_tiny_model(key)`): one image, its placeholders, some text.

    Each family gets its own pixel layout and exactly as many image tokens as its vision path produces.
    """
    import torch

    family = family_of(key)
    config = model.config
    gen = torch.Generator().manual_seed(1)
    text_before, text_after = [1, 5, 6], [7, 8, 9, 10]

    def pixels(*shape):
        return torch.randn(*shape, generator=gen)

    inputs: dict = {}
    if family in ("llava", "paligemma"):
        vc = config.vision_config
        inputs["pixel_values"] = pixels(1, 3, vc.image_size, vc.image_size)
        n_image = (vc.image_size // vc.patch_size) ** 2  # llava 'default' strategy drops CLS; SigLIP has none
    elif family in ("internvl", "gemma3"):
        vc = config.vision_config
        size = vc.image_size[0] if isinstance(vc.image_size, (list, tuple)) else vc.image_size
        patch = vc.patch_size[0] if isinstance(vc.patch_size, (list, tuple)) else vc.patch_size
        inputs["pixel_values"] = pixels(1, 3, size, size)
        n_image = (config.mm_tokens_per_image if family == "gemma3"
                   else int((size // patch) ** 2 * config.downsample_ratio**2))
    elif family in ("llava_next", "llava_onevision"):
        vc = config.vision_config
        height, width = config.image_grid_pinpoints[0]
        n_crops = 1 + (height // vc.image_size) * (width // vc.image_size)  # base image + anyres crops
        inputs["pixel_values"] = pixels(1, n_crops, 3, vc.image_size, vc.image_size)
        inputs["image_sizes"] = torch.tensor([[height, width]])
        with torch.no_grad():  # anyres unpadding + newline tokens: ask the model how many features it makes
            features = model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"]).pooler_output
        n_image = sum(f.shape[0] for f in features)
    elif family == "blip-2":
        vc = config.vision_config
        inputs["pixel_values"] = pixels(1, 3, vc.image_size, vc.image_size)
        n_image = config.num_query_tokens
    elif family in ("qwen2_vl", "qwen2_5_vl"):
        vc = config.vision_config
        grid = (1, 8, 8)  # t, h, w in patches; Qwen2.5-VL: 4x4 merged tokens = 2x2 attention windows
        patch_dim = vc.in_channels * vc.temporal_patch_size * vc.patch_size**2
        inputs["pixel_values"] = pixels(grid[0] * grid[1] * grid[2], patch_dim)
        inputs["image_grid_thw"] = torch.tensor([grid])
        n_image = grid[0] * grid[1] * grid[2] // vc.spatial_merge_size**2
        text_before = [1, 5, VISION_START]
        text_after = [VISION_END, 7, 8, 9]
    elif family in ("idefics3", "smolvlm"):
        vc = config.vision_config
        inputs["pixel_values"] = pixels(1, 1, 3, vc.image_size, vc.image_size)  # batch, images, C, H, W
        inputs["pixel_attention_mask"] = torch.ones(1, 1, vc.image_size, vc.image_size, dtype=torch.bool)
        n_image = (vc.image_size // vc.patch_size) ** 2 // config.scale_factor**2
    else:
        raise KeyError(f"no tiny inputs for family '{family}'")

    ids = text_before + [IMAGE_TOKEN] * n_image + text_after
    inputs["input_ids"] = torch.tensor([ids])
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if family in ("qwen2_vl", "qwen2_5_vl"):  # M-RoPE needs to know which tokens are image tokens (1)
        inputs["mm_token_type_ids"] = (inputs["input_ids"] == IMAGE_TOKEN).int()
    if family == "blip-2" and not config.use_decoder_only_language_model:  # T5: the decoder needs a prompt
        inputs["decoder_input_ids"] = torch.tensor([[0, 7, 8, 9]])
    if family == "gemma3":  # image tokens attend bidirectionally
        inputs["token_type_ids"] = (inputs["input_ids"] == IMAGE_TOKEN).long()
    if family == "paligemma":  # image + prefix attend bidirectionally, the suffix causally
        inputs["token_type_ids"] = torch.tensor([[0] * (len(ids) - 2) + [1, 1]])
    return inputs


def lora_gradients(key: str, **overrides) -> tuple[frozenset[str], frozenset[str]]:
    """(targeted Linear names, those whose LoRA received no gradient) after one forward + backward."""
    import torch
    from peft import LoraConfig, get_peft_model

    from toolkit.calculator.architectures import is_output_head

    model = build_tiny_model(key, **overrides)
    inputs = tiny_inputs(key, model)
    targets = sorted(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not is_output_head(n))
    config = LoraConfig(r=2, lora_alpha=2, target_modules=targets, lora_dropout=0.0, init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    out = peft_model(**inputs)
    out.logits.float().pow(2).mean().backward()

    grads: dict[str, list[torch.Tensor | None]] = {}
    for name, param in peft_model.named_parameters():
        if ".lora_A." in name or ".lora_B." in name:
            base = name.split(".lora_")[0].removeprefix("base_model.model.")
            grads.setdefault(base, []).append(param.grad)
    assert set(grads) == set(targets), "every targeted Linear should carry a LoRA"
    silent = {base for base, gs in grads.items() if all(g is None or not g.any() for g in gs)}
    return frozenset(targets), frozenset(silent)
