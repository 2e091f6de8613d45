"""What the user asks the calculator for: ratio, budget, mode, targeted module kinds, alpha rule.

Each is a frozen dataclass validated in `__post_init__`; bad values raise `InputError` naming the field
and what is allowed, in one line, so the CLI and the app can show it verbatim.

    >>> Ratio.parse("2:4:1").as_tuple()
    (2.0, 4.0, 1.0)
    >>> Budget.parse("rank", "8")
    Budget(kind='rank', value=8.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from toolkit.calculator.architectures import COMPONENTS
from toolkit.errors import InputError

MODES = ("rank", "share")
BUDGET_KINDS = ("rank", "params", "percent")
KINDS = ("all", "attention", "mlp")
ALPHA_RULES = ("scaled", "fixed", "rslora")
ROUNDINGS = ("mixed", "uniform")
DEFAULT_MODE, DEFAULT_ROUNDING, DEFAULT_ALPHA_RULE, DEFAULT_ALPHA = "rank", "mixed", "scaled", 2.0
"""the defaults of the allocation's choices, defined here once (the settings fields, forms and flags read them)"""
MAX_WEIGHT = 1e6
"""largest ratio weight: bigger ones overflow the normalisation (1e308:1e308:1e308 allocated rank 1 everywhere)"""
MAX_RANK = 65536
"""largest rank budget (no Linear layer of a VLM is wider)"""
MAX_ALPHA = 1e6
"""largest alpha (or alpha multiplier): beyond it alpha * rank overflows into inf scaling"""
MAX_PARAMS = 10**13
"""largest params budget (beyond any model's size)"""


def parse_number(text: str | float, field_name: str, allowed: str) -> float:
    try:
        value = float(str(text).strip().replace("_", "").replace(",", ""))
    except ValueError:
        raise InputError(f"{field_name}: '{text}' is not a number ({allowed})") from None
    if not math.isfinite(value):
        raise InputError(f"{field_name}: '{text}' is not a finite number ({allowed})")
    return value


SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}
"""multipliers of a parameter count typed as 20M, 1.5B or 300k"""


def parse_count(text: str | float, field_name: str, allowed: str) -> float:
    """A parameter count: a number (1,000 and 1_000 accepted) or one with a k / M / B suffix, e.g. 20M."""
    raw = str(text).strip()
    factor = SUFFIXES.get(raw[-1:].lower()) if raw[:-1].strip() else None
    if factor:
        return round(parse_number(raw[:-1], field_name, allowed) * factor)
    return parse_number(raw, field_name, allowed)


def parse_int(value, field_name: str) -> int | None:
    """A whole number from user input ('1_000' and '1,000' accepted); None for empty input."""
    if value is None or str(value).strip() == "":
        return None
    try:
        return int(str(value).strip().replace("_", "").replace(",", ""))
    except ValueError:
        raise InputError(f"{field_name}: '{value}' is not a whole number") from None


@dataclass(frozen=True)
class Ratio:
    """Allocation ratio vision : projector : language (non-negative reals, 0 = leave the component out)."""

    vision: float
    projector: float
    language: float

    def __post_init__(self):
        for comp in COMPONENTS:
            value = getattr(self, comp)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= MAX_WEIGHT:
                raise InputError(f"ratio: the {comp} weight must be a number in [0, {MAX_WEIGHT:g}], got {value!r}")
        if self.total == 0:
            raise InputError("ratio: at least one of vision, projector, language must be > 0 (0:0:0 allocates nothing)")

    @classmethod
    def parse(cls, text: str) -> Ratio:
        """Parse 'V:P:L' such as '1:4:1' or '2:4:1' (also accepts '/' or ',' as separators)."""
        raw = str(text).strip()
        for sep in ("/", ","):
            raw = raw.replace(sep, ":")
        parts = [p.strip() for p in raw.split(":")]
        if len(parts) != 3 or not all(parts):
            raise InputError(f"ratio: expected three numbers V:P:L such as 1:4:1, got '{text}'")
        values = []
        for comp, part in zip(COMPONENTS, parts):
            try:
                values.append(float(part))
            except ValueError:
                raise InputError(f"ratio: the {comp} weight '{part}' is not a number (expected V:P:L such as 1:4:1)") from None
        return cls(*values)

    @property
    def total(self) -> float:
        return self.vision + self.projector + self.language

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.vision, self.projector, self.language)

    def weight(self, component: str) -> float:
        return getattr(self, component)

    def __str__(self) -> str:
        return ":".join(f"{v:g}" for v in self.as_tuple())


def parse_ranks(text: str, field_name: str = "ranks") -> tuple[int, int, int]:
    """Explicit per-component ranks 'V:P:L' such as '4:16:4' (whole numbers >= 0, not all 0)."""
    parts = [p.strip() for p in str(text).strip().split(":")]
    example = "such as 4:16:4"
    if len(parts) != 3 or not all(parts):
        raise InputError(f"{field_name}: expected three ranks V:P:L {example}, got '{text}'")
    ranks = []
    for comp, part in zip(COMPONENTS, parts):
        if not part.isdigit() or len(part) > 6 or int(part) > MAX_RANK:
            raise InputError(f"{field_name}: the {comp} rank '{part[:20]}' must be a whole number in [0, {MAX_RANK}] "
                             f"({example})")
        ranks.append(int(part))
    if not any(ranks):
        raise InputError(f"{field_name}: at least one rank must be > 0 (0 leaves a component out)")
    return tuple(ranks)


@dataclass(frozen=True)
class Budget:
    """A LoRA parameter budget in one of three forms.

    - `rank`: "uniform rank r equivalent" = r x sum(in+out) over every targeted module of all three
      components (independent of the ratio, so every ratio of a sweep gets the same budget);
    - `params`: an absolute number of trainable parameters;
    - `percent`: a percentage of the base model's parameters.
    """

    kind: str
    value: float

    def __post_init__(self):
        if self.kind not in BUDGET_KINDS:
            raise InputError(f"budget: kind must be one of {', '.join(BUDGET_KINDS)}, got '{self.kind}'")
        if not isinstance(self.value, (int, float)) or not math.isfinite(self.value) or self.value <= 0:
            raise InputError(f"budget: the {self.kind} budget must be a number > 0, got {self.value!r}")
        if self.kind == "rank" and self.value > MAX_RANK:
            raise InputError(f"budget: a rank budget must be in (0, {MAX_RANK}], got {self.value:g}")
        if self.kind == "params" and self.value > MAX_PARAMS:
            raise InputError(f"budget: a params budget must be at most {MAX_PARAMS:.0e}, got {self.value:g}")
        if self.kind == "percent" and self.value > 100:
            raise InputError(f"budget: a percent budget must be in (0, 100], got {self.value:g}")
        if self.kind == "params" and self.value != int(self.value):
            raise InputError(f"budget: a params budget must be a whole number, got {self.value:g}")

    @classmethod
    def parse(cls, kind: str, text: str | float) -> Budget:
        allowed = {"rank": "a rank > 0 such as 8", "params": "a whole number of parameters > 0",
                   "percent": "a percentage in (0, 100]"}.get(kind, "a number > 0")
        if kind == "params":
            allowed += ", or with a suffix: 20M, 1.5B, 300k"
            return cls(kind, parse_count(text, f"budget ({kind})", allowed))
        return cls(kind, parse_number(text, f"budget ({kind})", allowed))

    def __str__(self) -> str:
        return {"rank": f"uniform rank {self.value:g} equivalent", "params": f"{int(self.value):,} params",
                "percent": f"{self.value:g}% of the base model"}[self.kind]


@dataclass(frozen=True)
class Targets:
    """Which Linear layers of each component get LoRA: all, attention only, or MLP only."""

    vision: str = "all"
    projector: str = "all"
    language: str = "all"

    def __post_init__(self):
        for comp in COMPONENTS:
            if getattr(self, comp) not in KINDS:
                raise InputError(f"targets.{comp}: must be one of {', '.join(KINDS)}, got '{getattr(self, comp)}'")

    @classmethod
    def parse(cls, text: str) -> Targets:
        """Parse 'language=attention,vision=mlp' (unnamed components stay 'all')."""
        values = {}
        for chunk in filter(None, (c.strip() for c in str(text).split(","))):
            key, sep, value = chunk.partition("=")
            if not sep or key.strip() not in COMPONENTS:
                raise InputError(f"targets: expected COMPONENT=KIND (components: {', '.join(COMPONENTS)}), got '{chunk}'")
            if key.strip() in values:  # a second value used to replace the first silently
                raise InputError(f"targets: {key.strip()} is given twice ('{text}'); give one KIND per component")
            values[key.strip()] = value.strip()
        return cls(**values)

    def kind(self, component: str) -> str:
        return getattr(self, component)


@dataclass(frozen=True)
class AlphaRule:
    """How lora_alpha is set.

    - `scaled` (default): alpha = value x rank per module, so the LoRA scaling alpha/r is equal everywhere;
    - `fixed`: alpha = value for every module (scaling then shrinks as rank grows);
    - `rslora`: rank-stabilised LoRA (scaling alpha/sqrt(r)) with alpha = value for every module.
    """

    rule: str = DEFAULT_ALPHA_RULE
    value: float = DEFAULT_ALPHA
    """the multiplier k for `scaled`, alpha itself for `fixed` and `rslora`"""

    def __post_init__(self):
        if self.rule not in ALPHA_RULES:
            raise InputError(f"alpha rule: must be one of {', '.join(ALPHA_RULES)}, got '{self.rule}'")
        if not isinstance(self.value, (int, float)) or not math.isfinite(self.value) or not 0 < self.value <= MAX_ALPHA:
            raise InputError(f"alpha: must be a number in (0, {MAX_ALPHA:g}], got {self.value!r}")

    def alpha(self, rank: int) -> float:
        value = self.value * rank if self.rule == "scaled" else self.value
        return int(value) if float(value).is_integer() else value


@dataclass(frozen=True)
class AllocationSpec:
    """Everything the solver needs besides the model structure."""

    ratio: Ratio
    budget: Budget
    mode: str = DEFAULT_MODE
    """`rank`: ranks proportional to the ratio; `share`: parameter shares proportional to the ratio"""
    targets: Targets = field(default_factory=Targets)
    alpha: AlphaRule = field(default_factory=AlphaRule)
    rounding: str = DEFAULT_ROUNDING
    """`mixed`: per-module floor/ceil mix so the budget is met exactly; `uniform`: one integer rank per component"""
    full_finetune: tuple[str, ...] = ()
    """components trained fully (PEFT `modules_to_save`) at their true cost, paid from the same budget"""

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"mode: must be one of {', '.join(MODES)}, got '{self.mode}'")
        if self.rounding not in ROUNDINGS:
            raise InputError(f"rounding: must be one of {', '.join(ROUNDINGS)}, got '{self.rounding}'")
        object.__setattr__(self, "full_finetune", parse_components(self.full_finetune, "full finetune"))
        if set(self.full_finetune) >= {c for c in COMPONENTS if self.ratio.weight(c) > 0}:
            raise InputError("full finetune: at least one component with ratio weight > 0 must keep LoRA "
                             f"(fully trained: {', '.join(self.full_finetune)}; ratio {self.ratio})")


def parse_components(value, field_name: str) -> tuple[str, ...]:
    """'projector' or 'vision,projector' (or a sequence of names) -> names in component order."""
    names = [str(v).strip() for v in (value.split(",") if isinstance(value, str) else value or ())]
    names = [n for n in names if n]
    for n in names:
        if n not in COMPONENTS:
            raise InputError(f"{field_name}: '{n}' is not a component (allowed: {', '.join(COMPONENTS)})")
    return tuple(c for c in COMPONENTS if c in names)
