"""The calculator's groups of the settings tree: which model (`ModelSettings`) and which allocation of its budget
(`AllocationSettings`); `AllocateSettings` composes them into what `python -m toolkit allocate` takes.

    s = AllocateSettings(model="llava-1.5-7b", ratio="1:4:1", budget_rank="8")
    s.spec                      # AllocationSpec(ratio=Ratio(1, 4, 1), budget=Budget('rank', 8.0), ...)
    a = s.allocation()          # solved once per settings object, then handed on (cached)

`TrainSettings` (toolkit/training/settings.py) composes the same groups with the data, optimisation and output
ones, so `allocate`, `train`, `sweep` and the app's forms share every allocation field, its default, its bounds
and its doc string (toolkit/fields.py has the machinery).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import PlainSerializer, PlainValidator, PrivateAttr, field_validator

from toolkit.calculator.architectures import COMPONENTS, ComponentPatterns
from toolkit.calculator.spec import (
    ALPHA_RULES,
    BUDGET_KINDS,
    DEFAULT_ALPHA,
    DEFAULT_ALPHA_RULE,
    DEFAULT_MODE,
    DEFAULT_ROUNDING,
    MAX_ALPHA,
    MAX_PARAMS,
    MAX_RANK,
    MODES,
    ROUNDINGS,
    AllocationSpec,
    AlphaRule,
    Budget,
    Ratio,
    Targets,
    parse_components,
    parse_count,
    parse_ranks,
)
from toolkit.errors import InputError
from toolkit.fields import Settings, setting


def _ratio(value) -> Ratio:
    return value if isinstance(value, Ratio) else Ratio.parse(str(value))


def _audit(value) -> tuple[int, int, int]:
    return parse_ranks(value if isinstance(value, str) else ":".join(str(v) for v in value), "audit")


def _targets(value) -> Targets:
    return value if isinstance(value, Targets) else Targets.parse(value)


def targets_text(t: Targets) -> str:
    """Targets as their flag text: 'language=attention' (components left at 'all' are not named)."""
    return ",".join(f"{c}={t.kind(c)}" for c in COMPONENTS if t.kind(c) != "all")


RatioField = Annotated[Ratio, PlainValidator(_ratio), PlainSerializer(str, return_type=str)]
"""a V:P:L ratio: text ('1:4:1') in flags, forms and JSON, a `Ratio` in the settings"""
RanksField = Annotated[tuple[int, int, int], PlainValidator(_audit),
                       PlainSerializer(list, return_type=list)]
TargetsField = Annotated[Targets, PlainValidator(_targets), PlainSerializer(targets_text, return_type=str)]


class ModelSettings(Settings):
    """Which base model (and how its components are found)."""

    section: ClassVar[str] = "model and allocation"
    model: str = setting("", metavar="M")
    """preset name, local folder with config.json, or Hub id"""
    revision: str | None = setting(None)
    """Hub revision when --model is a Hub id"""
    patterns: str | None = setting(None, metavar="'vision=RE;projector=RE;language=RE'")
    """component regexes for families the registry does not know"""

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, value):
        if value is not None:
            ComponentPatterns.parse(value)  # refuses bad regexes with the field's name
        return value

    def check(self) -> None:
        if not self.model:
            raise InputError("model: required (--model M): a preset name, a local folder with config.json, or a Hub id")

    def load_structure(self):
        """The model's structure (meta device) with these patterns and revision."""
        from toolkit.calculator.structure import load_structure

        patterns = ComponentPatterns.parse(self.patterns) if self.patterns else None
        return load_structure(self.model, patterns=patterns, revision=self.revision)


class AllocationSettings(Settings):
    """One allocation of a LoRA budget: a ratio (or explicit ranks), the budget, the mode, targets and alpha."""

    section: ClassVar[str] = "model and allocation"
    ratio: RatioField | None = setting(None, metavar="V:P:L")
    """vision:projector:language weights, e.g. 1:4:1 (0 leaves a component out)"""
    audit: RanksField | None = setting(None, metavar="V:P:L")
    """explicit ranks to audit (or train) instead of a solved allocation, e.g. 4:16:4"""
    mode: Literal[MODES] = setting(DEFAULT_MODE)
    """rank (ranks follow the ratio) or share (budget shares do)"""
    budget_rank: float | None = setting(None, gt=0, le=MAX_RANK, exclusive="budget", metavar="R",
                                        allowed=f"a rank in (0, {MAX_RANK}]")
    """budget = uniform rank R on every targeted module"""
    budget_params: int | None = setting(None, ge=1, le=MAX_PARAMS, exclusive="budget", metavar="N",
                                        allowed=f"a whole number in [1, {MAX_PARAMS:.0e}]")
    """budget in trainable parameters (20000000, 20,000,000 or 20M)"""
    budget_percent: float | None = setting(None, gt=0, le=100, exclusive="budget", metavar="P",
                                           allowed="a percentage in (0, 100]")
    """budget as a percentage of the base model's parameters"""
    targets: TargetsField = setting(factory=Targets)
    """module kinds per component, e.g. language=attention,vision=mlp (kinds: all, attention, mlp)"""
    alpha_rule: Literal[ALPHA_RULES] = setting(DEFAULT_ALPHA_RULE)
    """scaled (alpha = k*r), fixed, or rslora"""
    alpha_value: float = setting(DEFAULT_ALPHA, gt=0, le=MAX_ALPHA, flag="--alpha", allowed="in (0, 1e6]")
    """k for scaled, alpha itself for fixed/rslora"""
    rounding: Literal[ROUNDINGS] = setting(DEFAULT_ROUNDING)
    """mixed (per-module floor/ceil ranks: every ratio within 0.5 % of the budget) or uniform (one rank per component)"""
    full_finetune: tuple[str, ...] = setting((), metavar="COMPONENTS")
    """train these components fully (PEFT modules_to_save) at their true cost from the same budget, e.g. projector"""
    allow_budget_error: bool = setting(False)
    """accept an allocation more than 1 % off the budget (a sweep refuses it otherwise); recorded in cmba.json"""

    _allocation: dict = PrivateAttr(default_factory=dict)
    """the structure loaded and the allocations computed for these settings (`allocation`)"""

    @field_validator("budget_params", mode="before")
    @classmethod
    def _count(cls, value):
        if isinstance(value, str):
            return int(parse_count(value, "budget-params", "a whole number such as 20000000 or 20M"))
        return value

    @field_validator("full_finetune", mode="before")
    @classmethod
    def _components(cls, value):
        return parse_components(value, "full-finetune")

    def check(self) -> None:
        """A solved allocation needs a ratio and a budget (an audit needs neither)."""
        if self.audit is None:
            if self.ratio is None:
                raise InputError("ratio: required, e.g. --ratio 1:4:1 (or use --audit V:P:L for explicit ranks)")
            if self.budget is None:
                raise InputError("budget: give one of --budget-rank R, --budget-params N, --budget-percent P")

    @property
    def budget(self) -> Budget | None:
        """The one budget flag given, as a Budget (None in audit mode without one)."""
        for kind in BUDGET_KINDS:
            value = getattr(self, f"budget_{kind}")
            if value is not None:
                return Budget(kind, value)
        return None

    @property
    def alpha(self) -> AlphaRule:
        return AlphaRule(self.alpha_rule, self.alpha_value)

    @property
    def spec(self) -> AllocationSpec | None:
        """The solver's input (None in audit mode)."""
        if self.audit is not None:
            return None
        return AllocationSpec(ratio=self.ratio, budget=self.budget, mode=self.mode, targets=self.targets,
                              alpha=self.alpha, rounding=self.rounding, full_finetune=self.full_finetune)

    @property
    def audit_ranks(self) -> tuple[int, int, int] | None:
        return self.audit

    @property
    def audit_budget(self) -> Budget | None:
        return self.budget

    def replace(self, **change):
        """A validated copy; it keeps the structure and allocations computed so far unless `change` touches the
        model or the allocation (`replace(output=...)` does not compute the allocation again)."""
        new = super().replace(**change)
        allocation_fields = set(AllocationSettings.model_fields) | set(ModelSettings.model_fields)
        if not set(change) & allocation_fields:
            new._allocation.update(self._allocation)
        return new

    @property
    def structure(self):
        """The model's structure these settings loaded (once) for their allocation."""
        if "structure" not in self._allocation:
            self._allocation["structure"] = self.load_structure()
        return self._allocation["structure"]

    def allocation(self, structure=None):
        """The allocation these settings ask for (solved, or audited with --audit), computed once per settings
        object and structure: the CLI, the allocation check and the engine's setup share it."""
        from toolkit.calculator.allocation import allocate, audit

        structure = self.structure if structure is None else structure
        key = id(structure)
        if key not in self._allocation:
            if self.audit is not None:
                a = audit(structure, self.audit, budget=self.budget, targets=self.targets, alpha=self.alpha)
            else:
                a = allocate(structure, self.spec)
            self._allocation[key] = (structure, a)  # the structure is kept so that its id is not reused
        return self._allocation[key][1]


class AllocateSettings(ModelSettings, AllocationSettings):
    """What `python -m toolkit allocate` computes: one model's allocation."""

    def check(self) -> None:
        ModelSettings.check(self)
        AllocationSettings.check(self)
