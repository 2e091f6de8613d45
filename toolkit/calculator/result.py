"""The calculator's answer: per-module LoRA (or full fine-tuning), per-component totals, the whole allocation.

Frozen records built by `toolkit.calculator.allocation`; `Allocation.to_dict()` is the `allocate --json`
document (and what cmba.json stores), `Allocation.lora_config()` the `peft.LoraConfig`.

    >>> a = allocate(structure, spec)
    >>> a.total, a.budget_error, a.rounding, a.ranks_label()
    >>> a.signature() == b.signature()     # same arm (e.g. two ratios made identical by caps)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toolkit.calculator.architectures import COMPONENTS
from toolkit.calculator.spec import AlphaRule, Targets


@dataclass(frozen=True)
class ModuleAllocation:
    """The LoRA a single Linear layer gets."""

    name: str
    component: str
    kind: str
    in_features: int
    out_features: int
    rank: int
    alpha: float
    params: int
    capped: bool
    """the component rank exceeded the module's cap (min(in, out), or the rank where LoRA would cost more than
    full fine-tuning), so this module got its cap"""
    full_cheaper: bool
    """r x (in + out) >= in x out + bias: fully training this module would cost no more"""
    full: bool = False
    """fully fine-tuned (PEFT `modules_to_save`) instead of LoRA; rank 0, params = weight + bias"""


@dataclass(frozen=True)
class ComponentAllocation:
    """One component's share of the allocation."""

    component: str
    weight: float
    """the requested ratio weight (or, in audit mode, the given rank)"""
    target_kind: str
    rank: int
    """the component's rank (0 = left out); capped modules get less, see `modules`"""
    alpha: float
    params: int
    modules: int
    share_of_budget: float
    """fraction of the allocation's trainable parameters"""
    share_of_model: float
    """fraction of vision + projector + language parameters of the base model"""
    capped_modules: int
    mean_rank: float = 0.0
    """cost-weighted mean rank over the component's uncapped modules (mixed rounding gives floor/ceil mixes)"""
    full: bool = False
    """the component is fully fine-tuned (modules_to_save), at its true parameter cost"""
    target_rank: float = 0.0
    """the fractional rank the ratio and budget ask for (mixed rounding approximates it by `mean_rank`)"""
    rank_step: float = 0.0
    """how far one rank step of the component's largest module moves `mean_rank`: its granularity"""


@dataclass(frozen=True)
class Allocation:
    """The solver's answer; `to_dict()` is the `allocate --json` document, `lora_config()` the PEFT config."""

    model: str
    model_type: str
    family: str
    mode: str
    """rank | share | audit"""
    ratio: tuple[float, float, float]
    budget: int | None
    budget_spec: str
    total: int
    budget_error: float | None
    """(total - budget) / budget in percent"""
    achieved_ratio: tuple[float, float, float]
    components: dict[str, ComponentAllocation]
    modules: tuple[ModuleAllocation, ...]
    warnings: tuple[str, ...]
    targets: Targets = field(default_factory=Targets)
    alpha_rule: AlphaRule = field(default_factory=AlphaRule)
    rounding: str = "uniform"
    """mixed (per-module floor/ceil mix, budget-exact) or uniform (one integer rank per component)"""
    granularity: float | None = None
    """the smallest |budget error| in % that the module sizes guarantee (half a rank step per component)"""

    def ranks(self) -> tuple[int, int, int]:
        return tuple(self.components[c].rank for c in COMPONENTS)

    def mean_ranks(self) -> tuple[float, float, float]:
        return tuple(self.components[c].mean_rank for c in COMPONENTS)

    def ranks_label(self) -> str:
        """'8:32:8' for uniform ranks, '7.87:31.5:7.87' where a component mixes two ranks, 'full' if fully trained."""
        return ":".join("full" if self.components[c].full else f"{self.components[c].mean_rank:.3g}"
                        for c in COMPONENTS)

    @property
    def full_finetune(self) -> tuple[str, ...]:
        return tuple(c for c in COMPONENTS if self.components[c].full)

    def signature(self) -> tuple:
        """What PEFT trains: equal signatures are the same arm (e.g. two ratios made identical by caps)."""
        return tuple((m.name, m.rank, m.alpha, m.full) for m in self.modules)

    def lora_config_dict(self) -> dict:
        from toolkit.calculator.loraconfig import lora_config_dict

        return lora_config_dict(self)

    def lora_config(self):
        """A `peft.LoraConfig` whose trainable-parameter count on the model equals `total`."""
        from peft import LoraConfig

        return LoraConfig(**self.lora_config_dict())

    def to_dict(self, *, with_modules: bool = False) -> dict:
        out = {
            "model": self.model,
            "model_type": self.model_type,
            "family": self.family,
            "mode": self.mode,
            "ratio": list(self.ratio),
            "budget": self.budget,
            "budget_spec": self.budget_spec,
            "total": self.total,
            "trainable_params": self.total,
            "budget_error": self.budget_error,
            "rounding": self.rounding,
            "granularity": self.granularity,
            "full_finetune": list(self.full_finetune),
            "achieved_ratio": list(self.achieved_ratio),
            "alpha_rule": {"rule": self.alpha_rule.rule, "value": self.alpha_rule.value},
            "components": {
                c: {
                    "rank": a.rank,
                    "mean_rank": round(a.mean_rank, 4),
                    "target_rank": round(a.target_rank, 4),
                    "rank_step": round(a.rank_step, 4),
                    "full": a.full,
                    "alpha": a.alpha,
                    "params": a.params,
                    "modules": a.modules,
                    "target_kind": a.target_kind,
                    "share_of_budget": a.share_of_budget,
                    "share_of_model": a.share_of_model,
                    "capped_modules": a.capped_modules,
                }
                for c, a in self.components.items()
            },
            "warnings": list(self.warnings),
            "lora_config": self.lora_config_dict(),
        }
        if with_modules:
            out["module_detail"] = [m.__dict__ for m in self.modules]
        return out
