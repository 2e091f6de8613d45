"""Export an allocation as a standard `peft.LoraConfig` (dict, JSON, copyable Python snippet).

`target_modules` is the explicit list of full module names; `rank_pattern` / `alpha_pattern` are keyed by
disjoint per-component regexes in which layer indices are generalised (`layers\\.\\d+\\.`). Capped modules
get their own key; where mixed rounding gives a module kind two ranks, one key per (kind, rank) lists the
layer indices, bounded by dots (`layers\\.(?:1|3)\\.` never matches layer 11). Fully fine-tuned Linear layers
go to `modules_to_save` by full name. PEFT resolves a module's rank with the first key `k` such that
`re.match(rf"(.*\\.)?({k})$", name)`; `check_patterns` replays that rule and fails loudly if any targeted
module would get a rank other than the allocation's, so an exported config is correct by construction.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict

from toolkit.calculator.architectures import COMPONENTS


def _template(name: str, index: str = r"\d+") -> str:
    """Regex for a module name with every numeric path segment generalised (to `index`)."""
    return r"\.".join(index if seg.isdigit() else re.escape(seg) for seg in name.split("."))


def _with_indices(names: list[str]) -> str:
    """One regex for modules that differ only in their single numeric segment: `layers\\.(?:1|3|11)\\.` (the
    segment is bounded by dots, so index 1 never matches layer 11); otherwise the escaped names."""
    digits = [[i for i, seg in enumerate(n.split(".")) if seg.isdigit()] for n in names]
    if len(digits[0]) != 1 or any(d != digits[0] for d in digits):
        return "|".join(re.escape(n) for n in names)
    pos = digits[0][0]
    indices = sorted({n.split(".")[pos] for n in names}, key=int)
    return _template(names[0], f"(?:{'|'.join(indices)})")


def _pattern_groups(allocation) -> list[tuple[str, int, float]]:
    """(regex, rank, alpha) per component and distinct (rank, alpha), disjoint across all keys."""
    groups = []
    for comp in COMPONENTS:
        mine = [m for m in allocation.modules if m.component == comp and not m.full]
        by_template: dict[str, dict[tuple, list[str]]] = defaultdict(lambda: defaultdict(list))
        for m in mine:
            by_template[_template(m.name)][(m.rank, m.alpha)].append(m.name)
        by_value: dict[tuple, list[str]] = defaultdict(list)
        split = []  # templates whose modules mix ranks: one readable key per (template, rank)
        for tpl, values in by_template.items():
            if len(values) == 1:
                by_value[next(iter(values))].append(tpl)
            else:
                split += [(f"(?:{_with_indices(names)})", *value) for value, names in values.items()]
        for (rank, alpha), alternatives in by_value.items():
            groups.append((f"(?:{'|'.join(alternatives)})", rank, alpha))
        groups += split
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
    for m in (m for m in allocation.modules if not m.full):
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
        "target_modules": sorted(m.name for m in allocation.modules if not m.full),
        "rank_pattern": {key: rank for key, rank, _ in groups},
        "alpha_pattern": {key: alpha for key, _, alpha in groups},
        "lora_dropout": 0.0,
        "bias": "none",
        "use_rslora": allocation.alpha_rule.rule == "rslora",
    }
    full = sorted(m.name for m in allocation.modules if m.full)
    if full:  # full names of Linear layers: PEFT wraps each, trainable count = weight + bias
        config["modules_to_save"] = full
    check_patterns(allocation, config)
    return config


def lora_config_json(allocation) -> str:
    return json.dumps(lora_config_dict(allocation), indent=2)


def natural_key(name: str) -> tuple:
    """layers.2 before layers.10: digit runs compare as numbers."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _packed(items: list[str], *, indent: int, width: int) -> str:
    """Comma-separated items, as many per line as fit in `width` (short names share a line; 92 columns show
    unwrapped in the app at 1280 px)."""
    lines, line = [], ""
    for item in items:
        if line and indent + len(line) + len(item) + 2 > width:
            lines.append(line)
            line = ""
        line += ("" if not line else " ") + item + ","
    return "\n".join(" " * indent + text for text in [*lines, line] if text).rstrip(",")


def lora_config_snippet(allocation) -> str:
    """Self-contained Python that rebuilds the config and checks PEFT's parameter count."""
    d = lora_config_dict(allocation)
    targets = _packed([repr(n) for n in sorted(d["target_modules"], key=natural_key)], indent=8, width=92)

    def fmt(patterns: dict) -> str:
        return "{\n" + "".join(f"        {k!r}: {v!r},\n" for k, v in patterns.items()) + "    }"

    return (
        "from peft import LoraConfig, get_peft_model\n\n"
        f"# CMBA allocation for {allocation.model}: ratio {':'.join(f'{w:g}' for w in allocation.ratio)} "
        f"({allocation.mode} mode, {allocation.rounding} rounding), {allocation.total:,} trainable parameters\n"
        "lora_config = LoraConfig(\n"
        f"    r={d['r']!r},\n    lora_alpha={d['lora_alpha']!r},\n"
        f"    target_modules=[\n{targets},\n    ],\n"
        f"    rank_pattern={fmt(d['rank_pattern'])},\n"
        f"    alpha_pattern={fmt(d['alpha_pattern'])},\n"
        + (f"    modules_to_save={d['modules_to_save']!r},\n" if d.get("modules_to_save") else "")
        + f"    lora_dropout={d['lora_dropout']!r},\n    bias={d['bias']!r},\n    use_rslora={d['use_rslora']!r},\n"
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
