"""Which Linear layers of a VLM belong to its vision encoder, projector and language decoder.

A registry maps each supported `model_type` to module-path patterns per component and to a rule that finds
*dead* modules (Linear layers that never receive a gradient, so LoRA on them is wasted budget). Unknown
families fall back to name heuristics; if those cannot find both a vision and a language part the user gets
an `UnsupportedModelError` and can pass patterns (`ComponentPatterns.parse("vision=...;projector=...;...")`).

Patterns are regexes for a module-path prefix: `model\\.visual` matches `model.visual` and everything below
it. The projector is checked first because some projectors live inside the vision tower (Qwen2-VL's merger).
Module names are those of the installed transformers major version (v5).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from toolkit.errors import InputError, UnsupportedModelError

COMPONENTS = ("vision", "projector", "language")
EXCLUDED = "excluded"

DeadRule = Callable[[object, Iterable[str]], dict[str, str]]
MAX_PATTERN = 256
"""longest accepted component regex"""


def _nested_repeat(tree) -> bool:
    """Whether a parsed regex repeats something that itself repeats, e.g. (a+)+ or (.*)*, or repeats a choice
    between alternatives that can match the same text, e.g. (a|a)* or (.|x)*: the shapes whose backtracking is
    exponential. Refusing them keeps every match of a module name bounded in time."""
    from re import _constants as c  # noqa: PLC2701 - the stdlib's own regex parser, the only exact view

    def walk(items, inside_repeat: bool) -> bool:
        for op, av in items:
            if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
                low, high, sub = av
                repeats = high is c.MAXREPEAT or high > 1
                if repeats and inside_repeat:
                    return True
                if walk(sub, inside_repeat or repeats):
                    return True
            elif op is c.SUBPATTERN and walk(av[-1], inside_repeat):
                return True
            elif op is c.BRANCH:
                if inside_repeat and not _disjoint_literals(av[1]):  # (a|a)* or (.|.)*: as bad as (a+)+
                    return True
                if any(walk(b, inside_repeat) for b in av[1]):
                    return True
            elif op in (c.ASSERT, c.ASSERT_NOT) and walk(av[1], inside_repeat):
                return True
        return False

    def _disjoint_literals(branches) -> bool:
        firsts = []
        for b in branches:
            if not b or any(op is not c.LITERAL for op, _ in b):
                return False
            firsts.append(b[0][1])
        return len(set(firsts)) == len(firsts)

    return walk(tree, False)


@dataclass(frozen=True)
class ComponentPatterns:
    """Module-path prefix regexes for each component (a module matching none is excluded)."""

    vision: tuple[str, ...]
    projector: tuple[str, ...]
    language: tuple[str, ...]

    def __post_init__(self):
        for comp in COMPONENTS:
            for pat in getattr(self, comp):
                if len(pat) > MAX_PATTERN:
                    raise InputError(f"patterns.{comp}: a regex of {len(pat)} characters (allowed: up to {MAX_PATTERN})")
                try:
                    re.compile(pat)
                    from re import _parser

                    nested = _nested_repeat(_parser.parse(pat))
                except re.error as exc:
                    raise InputError(f"patterns.{comp}: '{pat}' is not a valid regular expression ({exc})") from None
                if nested:
                    raise InputError(f"patterns.{comp}: '{pat}' repeats a group that can match the same text in several "
                                     "ways (like (a+)+ or (a|a)*), which can take exponential time; use a module-path prefix such as model\\.vision_tower")

    @classmethod
    def parse(cls, text: str) -> ComponentPatterns:
        """Parse `vision=re1,re2;projector=re3;language=re4` (all three components required).

        >>> ComponentPatterns.parse("vision=model.vt;projector=model.proj;language=model.lm").projector
        ('model.proj',)
        """
        parts: dict[str, tuple[str, ...]] = {}
        for chunk in filter(None, (c.strip() for c in text.split(";"))):
            key, sep, value = chunk.partition("=")
            key = key.strip()
            if not sep or key not in COMPONENTS:
                raise InputError(
                    f"patterns: expected 'vision=REGEX;projector=REGEX;language=REGEX', got '{chunk}'"
                )
            parts[key] = tuple(p.strip() for p in value.split(",") if p.strip())
        missing = [c for c in COMPONENTS if not parts.get(c)]
        if missing:
            raise InputError(f"patterns: missing {', '.join(missing)} (give all three: vision=...;projector=...;language=...)")
        return cls(**parts)

    def component_of(self, name: str) -> str:
        for comp in ("projector", "vision", "language"):
            if any(re.match(rf"(?:{pat})(?:\.|$)", name) for pat in getattr(self, comp)):
                return comp
        return EXCLUDED


@dataclass(frozen=True)
class ArchitectureSpec:
    """How one model family splits into components."""

    family: str
    model_types: tuple[str, ...]
    patterns: ComponentPatterns
    dead_rule: DeadRule | None = field(default=None, compare=False)


def _vision_layers_after_feature_layer(prefix: str) -> DeadRule:
    """LLaVA-style models read `hidden_states[vision_feature_layer]`; later encoder layers get no gradient."""

    def rule(config, names: Iterable[str]) -> dict[str, str]:
        n_layers = config.vision_config.num_hidden_layers
        feature_layer = getattr(config, "vision_feature_layer", None)
        if feature_layer is None:  # VipLlava names it in the plural
            feature_layer = getattr(config, "vision_feature_layers", -1)
        layers = feature_layer if isinstance(feature_layer, (list, tuple)) else [feature_layer]
        # hidden_states[j] is the output after j layers, so index j uses layers 0..j-1.
        used = max(n_layers + 1 + k if k < 0 else k for k in layers)
        dead = {}
        layer_re = re.compile(rf"{prefix}\.(\d+)\.")
        for name in names:
            m = layer_re.match(name)
            if m and int(m.group(1)) >= used:
                dead[name] = f"vision layer {m.group(1)} runs after vision_feature_layer={feature_layer}: no gradient"
        return dead

    return rule


def _all_of(*rules: DeadRule) -> DeadRule:
    """Every module any of `rules` marks dead (the first reason wins)."""

    def rule(config, names: Iterable[str]) -> dict[str, str]:
        names = list(names)
        dead: dict[str, str] = {}
        for r in rules:
            for name, reason in r(config, names).items():
                dead.setdefault(name, reason)
        return dead

    return rule


def _regex_dead(pattern: str, reason: str) -> DeadRule:
    def rule(config, names: Iterable[str]) -> dict[str, str]:
        return {n: reason for n in names if re.fullmatch(pattern, n)}

    return rule


def _prefix_dead(prefix: str, reason: str) -> DeadRule:
    def rule(config, names: Iterable[str]) -> dict[str, str]:
        return {n: reason for n in names if n == prefix or n.startswith(prefix + ".")}

    return rule


# A SigLIP tower builds its attention-pooling head (`vision_use_head`, default on); LLaVA-style models and
# PaliGemma read the patch tokens, so the head never gets a gradient.
_SIGLIP_HEAD = r"(?:.*\.)?vision_tower\.(?:vision_model\.)?head(?:\..*)?"
_siglip_head_dead = _regex_dead(_SIGLIP_HEAD, "SigLIP pooling head: the model reads the patch tokens, not the pooled output")

_LLAVA = ComponentPatterns(
    vision=(r"model\.vision_tower",),
    projector=(r"model\.multi_modal_projector",),
    language=(r"model\.language_model",),
)
_QWEN = ComponentPatterns(
    vision=(r"model\.visual",),
    projector=(r"model\.visual\.merger",),
    language=(r"model\.language_model",),
)
_IDEFICS3 = ComponentPatterns(
    vision=(r"model\.vision_model",),
    projector=(r"model\.connector",),
    language=(r"model\.text_model",),
)

REGISTRY: tuple[ArchitectureSpec, ...] = (
    ArchitectureSpec(
        "llava",
        ("llava",),
        _LLAVA,
        _all_of(_vision_layers_after_feature_layer(r"model\.vision_tower\.(?:vision_model\.)?encoder\.layers"),
                _siglip_head_dead),
    ),
    ArchitectureSpec(
        "llava_next",
        ("llava_next",),
        _LLAVA,
        _all_of(_vision_layers_after_feature_layer(r"model\.vision_tower\.(?:vision_model\.)?encoder\.layers"),
                _siglip_head_dead),
    ),
    ArchitectureSpec(
        "blip-2",
        ("blip-2",),
        ComponentPatterns(
            vision=(r"vision_model",),
            projector=(r"qformer", r"language_projection"),
            language=(r"language_model",),
        ),
        # With use_qformer_text_input the Q-Former layers get a text feed-forward block that generation never
        # feeds (only the learned queries go through the Q-Former); the query FFN is `*_query`.
        _regex_dead(
            r"qformer\.encoder\.layer\.\d+\.(?:intermediate|output)\.dense",
            "Q-Former text feed-forward: BLIP-2 generation sends only the query tokens through the Q-Former",
        ),
    ),
    ArchitectureSpec("qwen2_vl", ("qwen2_vl",), _QWEN),
    # The transformers-native InternVL (InternVLForConditionalGeneration, the `-hf` checkpoints) and
    # LLaVA-OneVision read vision_feature_layer like LLaVA (InternViT names its blocks `encoder.layer.N`).
    ArchitectureSpec(
        "internvl",
        ("internvl",),
        _LLAVA,
        _vision_layers_after_feature_layer(r"model\.vision_tower\.encoder\.layer"),
    ),
    ArchitectureSpec(
        "llava_onevision",
        ("llava_onevision",),
        _LLAVA,
        _all_of(_vision_layers_after_feature_layer(r"model\.vision_tower\.(?:vision_model\.)?encoder\.layers"),
                _siglip_head_dead),
    ),
    # Gemma 3: SigLIP's last hidden state goes to a projector without Linear layers (NO_LINEAR)
    ArchitectureSpec("gemma3", ("gemma3",), _LLAVA, _siglip_head_dead),
    ArchitectureSpec("qwen2_5_vl", ("qwen2_5_vl",), _QWEN),
    ArchitectureSpec("idefics3", ("idefics3",), _IDEFICS3),
    ArchitectureSpec("smolvlm", ("smolvlm",), _IDEFICS3),
    ArchitectureSpec(
        "paligemma",
        ("paligemma",),
        _LLAVA,
        _prefix_dead("model.vision_tower.head", "SigLIP pooling head: PaliGemma uses the patch tokens, not the pooled output"),
    ),
)


NO_LINEAR = {
    ("gemma3", "projector"): "Gemma 3's projector is a weight matrix (an nn.Parameter, "
                             "multi_modal_projector.mm_input_projection_weight) and a norm, not a Linear layer, so it "
                             "cannot get a LoRA here; give the projector weight 0 (e.g. --ratio 1:0:1)",
}
"""(model_type, component) -> why that component has no Linear layer to adapt"""


def spec_for(model_type: str) -> ArchitectureSpec | None:
    return next((s for s in REGISTRY if model_type in s.model_types), None)


# Unregistered LLaVA-style families (VipLlava, LLaVA-OneVision, ...) read hidden states the same way.
_generic_feature_layer_rule = _all_of(
    _vision_layers_after_feature_layer(r"(?:.*\.)?vision_tower\.(?:vision_model\.)?encoder\.layers"), _siglip_head_dead)


def dead_rule_for(config) -> DeadRule | None:
    """The registry's rule for this model_type, else the LLaVA-style rule when the config has feature layers."""
    spec = spec_for(config.model_type)
    if spec is not None:
        return spec.dead_rule
    has_layers = hasattr(config, "vision_feature_layer") or hasattr(config, "vision_feature_layers")
    return _generic_feature_layer_rule if has_layers and hasattr(config, "vision_config") else None


# Heuristic keywords, matched against whole path segments (projector first).
_HEURISTICS = {
    "projector": r"multi_modal_projector|mm_projector|projector|connector|merger|aligner|language_projection|qformer|resampler|abstractor",
    "vision": r"vision_tower|vision_model|visual|vision_encoder|image_encoder|vision|vit|vpm",
    "language": r"language_model|text_model|llm|lm|decoder|text_decoder",
}


def heuristic_component(name: str) -> str:
    segments = name.split(".")
    for comp in ("projector", "vision", "language"):
        if any(re.fullmatch(_HEURISTICS[comp], s) for s in segments):
            return comp
    return EXCLUDED


# Case-insensitive: T5 (BLIP-2 Flan-T5) names its blocks SelfAttention / EncDecAttention.
_ATTENTION_SEGMENT = re.compile(r".*(attn|attention).*", re.IGNORECASE)


def module_kind(name: str) -> str:
    """'attention' when any path segment is an attention block (q/k/v/o, qkv, cross-attention), else 'mlp'."""
    return "attention" if any(_ATTENTION_SEGMENT.fullmatch(s) for s in name.split(".")) else "mlp"


# vLLM serves LoRA on the vision tower and connector only behind `--enable-tower-connector-lora`, per family:
# the Qwen-VL series and Idefics3 (vLLM PR #26674), LLaVA (#31513), PaliGemma (#31656), LLaVA-NeXT (#49788).
# Elsewhere vLLM loads the language part and ignores the rest with a warning.
VLLM_TOWER_CONNECTOR_LORA = {"qwen2_vl": "#26674", "qwen2_5_vl": "#26674", "idefics3": "#26674",
                             "llava": "#31513", "paligemma": "#31656", "llava_next": "#49788"}


def serving_note(model_type: str, components: list[str]) -> str:
    """What serving an adapter on `components` (vision / projector) of this family takes."""
    parts = " and ".join(components)
    if model_type in VLLM_TOWER_CONNECTOR_LORA:
        return (f"serving: vLLM applies the LoRA on the {parts} of {model_type} only with "
                f"--enable-tower-connector-lora (vLLM PR {VLLM_TOWER_CONNECTOR_LORA[model_type]}); without it, or on "
                f"stacks that load language-model LoRA only, merge the adapter into the base weights first")
    return (f"serving: vLLM's LoRA on the vision tower and connector (--enable-tower-connector-lora) is not known "
            f"here to cover {model_type} (it covers Qwen2-VL / Qwen2.5-VL, Idefics3, LLaVA, LLaVA-NeXT, PaliGemma); "
            f"stacks that load language-model LoRA only ignore the {parts} adapters: merge the adapter into the "
            f"base weights before serving there")


def is_output_head(name: str) -> bool:
    return name.split(".")[-1] == "lm_head"


def require_components(model_id: str, counts: dict[str, int], how: str) -> None:
    """Raise when classification found no vision or no language Linear layers."""
    missing = [c for c in ("vision", "language") if counts.get(c, 0) == 0]
    if missing:
        raise UnsupportedModelError(
            f"model: could not find the {' and '.join(missing)} part of '{model_id}' ({how}); "
            "pass component patterns, e.g. --patterns 'vision=model\\.vision_tower;projector=model\\.mm_projector;"
            "language=model\\.language_model'"
        )
