"""Export an allocation as a standard `peft.LoraConfig` (dict, JSON, copyable Python snippet).

`target_modules` is the explicit list of full module names; `rank_pattern` / `alpha_pattern` are keyed by
disjoint per-component regexes in which layer indices are generalised (`layers\\.\\d+\\.`). Capped modules
get their own key. PEFT resolves a module's rank with the first key `k` such that
`re.match(rf"(.*\\.)?({k})$", name)`; `check_patterns` replays that rule and fails loudly if any targeted
module would get a rank other than the allocation's, so an exported config is correct by construction.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict

from toolkit.calculator.architectures import COMPONENTS


def _template(name: str) -> str:
    """Regex for a module name with every numeric path segment generalised."""
    return r"\.".join(r"\d+" if seg.isdigit() else re.escape(seg) for seg in name.split("."))


def _pattern_groups(allocation) -> list[tuple[str, int, float]]:
    """(regex, rank, alpha) per component and distinct (rank, alpha), disjoint across all keys."""
    groups = []
    for comp in COMPONENTS:
        by_template: dict[str, set] = defaultdict(set)
        for m in allocation.modules:
            if m.component == comp:
                by_template[_template(m.name)].add((m.rank, m.alpha))
        by_value: dict[tuple, list[str]] = defaultdict(list)
        for m in allocation.modules:
            if m.component != comp:
                continue
            tpl = _template(m.name)
            if len(by_template[tpl]) == 1:
                if tpl not in by_value[(m.rank, m.alpha)]:
                    by_value[(m.rank, m.alpha)].append(tpl)
            else:  # same template, different shapes: name the modules one by one
                by_value[(m.rank, m.alpha)].append(re.escape(m.name))
        for (rank, alpha), alternatives in by_value.items():
            groups.append((f"(?:{'|'.join(alternatives)})", rank, alpha))
    return groups


def peft_rank_of(name: str, config: dict) -> tuple[int, float]:
    """The (rank, alpha) PEFT gives `name` under `config` (PEFT's first-matching-key rule)."""

    def lookup(patterns: dict, default):
        for key, value in patterns.items():
            if re.match(rf"(.*\.)?({key})$", name):
                return value
        return default

    return lookup(config["rank_pattern"], config["r"]), lookup(config["alpha_pattern"], config["lora_alpha"])


def check_patterns(allocation, config: dict) -> None:
    """Every targeted module gets exactly its allocated rank/alpha and matches exactly one key."""
    keys = list(config["rank_pattern"])
    for m in allocation.modules:
        hits = [k for k in keys if re.match(rf"(.*\.)?({k})$", m.name)]
        got = peft_rank_of(m.name, config)
        if len(hits) != 1 or got != (m.rank, m.alpha):
            raise RuntimeError(f"internal error: pattern export gives {m.name} {got}, allocation says {(m.rank, m.alpha)}")


def lora_config_dict(allocation) -> dict:
    """A dict that `peft.LoraConfig(**d)` accepts; its trainable count equals `allocation.total`."""
    groups = _pattern_groups(allocation)
    comp_ranks = allocation.components
    main = next(c for c in ("language", "projector", "vision") if comp_ranks[c].rank > 0)
    config = {
        "r": comp_ranks[main].rank,
        "lora_alpha": comp_ranks[main].alpha,
        "target_modules": sorted(m.name for m in allocation.modules),
        "rank_pattern": {key: rank for key, rank, _ in groups},
        "alpha_pattern": {key: alpha for key, _, alpha in groups},
        "lora_dropout": 0.0,
        "bias": "none",
        "use_rslora": allocation.alpha_rule.rule == "rslora",
    }
    check_patterns(allocation, config)
    return config


def lora_config_json(allocation) -> str:
    return json.dumps(lora_config_dict(allocation), indent=2)


def lora_config_snippet(allocation) -> str:
    """Self-contained Python that rebuilds the config and checks PEFT's parameter count."""
    d = lora_config_dict(allocation)
    targets = ",\n".join(f"        {name!r}" for name in d["target_modules"])

    def fmt(patterns: dict) -> str:
        return "{\n" + "".join(f"        {k!r}: {v!r},\n" for k, v in patterns.items()) + "    }"

    return (
        "from peft import LoraConfig, get_peft_model\n\n"
        f"# CMBA allocation for {allocation.model}: ratio {':'.join(f'{w:g}' for w in allocation.ratio)} "
        f"({allocation.mode} mode), {allocation.total:,} LoRA parameters\n"
        "lora_config = LoraConfig(\n"
        f"    r={d['r']!r},\n    lora_alpha={d['lora_alpha']!r},\n"
        f"    target_modules=[\n{targets},\n    ],\n"
        f"    rank_pattern={fmt(d['rank_pattern'])},\n"
        f"    alpha_pattern={fmt(d['alpha_pattern'])},\n"
        f"    lora_dropout={d['lora_dropout']!r},\n    bias={d['bias']!r},\n    use_rslora={d['use_rslora']!r},\n"
        ")\n"
        "model = get_peft_model(model, lora_config)  # model: the base VLM loaded with from_pretrained\n"
        f"assert model.get_nb_trainable_parameters()[0] == {allocation.total}\n"
    )


def peft_trainable_count(structure, allocation) -> int:
    """PEFT's own count: apply the exported config with `get_peft_model` to the model built on `meta`.

    No weights are allocated, so this confirms a 7B allocation in well under a second after imports.
    """
    import logging

    import torch
    from peft import get_peft_model

    from toolkit.calculator.structure import instantiate_on_meta

    # bitsandbytes (imported by PEFT) warns about an optional CPU kernel we never use here.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    with torch.device("meta"):
        model = get_peft_model(instantiate_on_meta(structure.config), allocation.lora_config())
    return model.get_nb_trainable_parameters()[0]
