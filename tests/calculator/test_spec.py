"""What the user asks for (toolkit.calculator.spec): ratio, budget, targets, alpha rule, mode.

Every bad value must raise `InputError` with a one-line message that names the field, so the CLI and the app
can show it verbatim next to the input.
"""

from __future__ import annotations

import math

import pytest

from toolkit.calculator.spec import AllocationSpec, AlphaRule, Budget, Ratio, Targets
from toolkit.errors import CmbaError, InputError


def assert_user_error(excinfo, prefix: str) -> str:
    """The error is an InputError (hence a CmbaError) whose message is one line starting with the field."""
    exc = excinfo.value
    assert isinstance(exc, InputError) and isinstance(exc, CmbaError)
    message = str(exc)
    assert "\n" not in message and "\r" not in message, message
    assert message == message.strip() and message, message
    assert message.startswith(prefix), f"{message!r} does not start with {prefix!r}"
    return message


# --------------------------------------------------------------------------------------------------- ratio


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1:4:1", (1.0, 4.0, 1.0)),
        ("2:4:1", (2.0, 4.0, 1.0)),
        ("1:1:1", (1.0, 1.0, 1.0)),
        ("0:1:1", (0.0, 1.0, 1.0)),
        ("0:0:1", (0.0, 0.0, 1.0)),
        ("0.5:3:1", (0.5, 3.0, 1.0)),
        (" 1 : 4 : 1 ", (1.0, 4.0, 1.0)),
        ("1/4/1", (1.0, 4.0, 1.0)),
        ("1,4,1", (1.0, 4.0, 1.0)),
        ("1e0:4:1", (1.0, 4.0, 1.0)),
    ],
)
def test_ratio_parse_valid(text, expected):
    ratio = Ratio.parse(text)
    assert ratio.as_tuple() == expected
    assert (ratio.vision, ratio.projector, ratio.language) == expected
    assert ratio.total == pytest.approx(sum(expected))
    assert ratio.weight("projector") == expected[1]


def test_ratio_str_round_trips():
    for text in ("1:4:1", "2:4:1", "0.5:3:1", "0:0:1"):
        ratio = Ratio.parse(text)
        assert str(ratio) == text
        assert Ratio.parse(str(ratio)) == ratio


@pytest.mark.parametrize(
    "text, names",
    [
        ("1:-1:2", "projector"),  # negative weight
        ("-1:1:1", "vision"),
        ("1:1:-0.5", "language"),
        ("a:b:c", "vision"),  # not numbers: the first bad one is named
        ("1:x:1", "projector"),
        ("0:0:0", "0:0:0"),  # allocates nothing
        ("0:0.0:0e0", "at least one"),
        ("1:2", "three"),  # wrong arity
        ("1:2:3:4", "three"),
        ("1::2", "three"),  # empty part
        ("::", "three"),
        ("", "three"),
        ("nan:1:1", "vision"),  # not finite
        ("1:inf:1", "projector"),
        ("inf:1:1", "vision"),
        ("1:1:-inf", "language"),
    ],
)
def test_ratio_parse_invalid(text, names):
    with pytest.raises(InputError) as excinfo:
        Ratio.parse(text)
    message = assert_user_error(excinfo, "ratio:")
    assert names in message


@pytest.mark.parametrize("values", [(1, -1, 2), (math.nan, 1, 1), (1, math.inf, 1), (0, 0, 0), ("1", 1, 1)])
def test_ratio_constructor_validates(values):
    with pytest.raises(InputError) as excinfo:
        Ratio(*values)
    assert_user_error(excinfo, "ratio:")


# --------------------------------------------------------------------------------------------------- budget


@pytest.mark.parametrize(
    "kind, text, value",
    [
        ("rank", "8", 8.0),
        ("rank", "0.5", 0.5),  # fractional uniform-rank equivalents are allowed
        ("rank", 16, 16.0),
        ("params", "5000000", 5_000_000.0),
        ("params", "5_000_000", 5_000_000.0),
        ("params", "5,000,000", 5_000_000.0),
        ("params", "1e6", 1_000_000.0),
        ("percent", "0.5", 0.5),
        ("percent", "100", 100.0),
        ("percent", " 2 ", 2.0),
    ],
)
def test_budget_parse_valid(kind, text, value):
    budget = Budget.parse(kind, text)
    assert budget == Budget(kind, value)
    assert budget.kind == kind and budget.value == value
    assert str(budget)  # human-readable form for the report


@pytest.mark.parametrize(
    "kind, text",
    [
        ("rank", "-4"),  # negative
        ("params", "-1000"),
        ("percent", "-1"),
        ("rank", "0"),  # zero
        ("params", "0"),
        ("percent", "0"),
        ("rank", "abc"),  # non-numeric
        ("params", "lots"),
        ("percent", "5%"),
        ("rank", ""),
        ("rank", "nan"),  # not finite
        ("params", "inf"),
        ("percent", "150"),  # > 100 %
        ("percent", "100.5"),
        ("params", "1000.5"),  # fractional parameter count
        ("params", "0.5"),
    ],
)
def test_budget_parse_invalid(kind, text):
    with pytest.raises(InputError) as excinfo:
        Budget.parse(kind, text)
    message = assert_user_error(excinfo, "budget")
    assert "\n" not in message


def test_budget_messages_say_what_is_allowed():
    with pytest.raises(InputError, match=r"percent.*\(0, 100\]"):
        Budget.parse("percent", "150")
    with pytest.raises(InputError, match="whole number"):
        Budget.parse("params", "1000.5")
    with pytest.raises(InputError, match="not a number"):
        Budget.parse("rank", "abc")
    with pytest.raises(InputError, match="> 0"):
        Budget.parse("rank", "-4")


@pytest.mark.parametrize("kind, value", [("tokens", 8), ("rank", -1), ("rank", 0), ("rank", math.inf), ("rank", "8")])
def test_budget_constructor_validates(kind, value):
    with pytest.raises(InputError) as excinfo:
        Budget(kind, value)
    assert_user_error(excinfo, "budget")


# --------------------------------------------------------------------------------------------------- targets


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", ("all", "all", "all")),
        ("language=attention", ("all", "all", "attention")),
        ("language=attention,vision=mlp", ("mlp", "all", "attention")),
        (" vision = attention , projector = all ", ("attention", "all", "all")),
        ("language=mlp,", ("all", "all", "mlp")),
    ],
)
def test_targets_parse_valid(text, expected):
    targets = Targets.parse(text)
    assert (targets.vision, targets.projector, targets.language) == expected
    assert tuple(targets.kind(c) for c in ("vision", "projector", "language")) == expected


def test_targets_default_is_all():
    assert Targets() == Targets.parse("") == Targets("all", "all", "all")


@pytest.mark.parametrize(
    "text, prefix",
    [
        ("language", "targets:"),  # no '='
        ("text=attention", "targets:"),  # unknown component
        ("language=attn", "targets.language:"),  # unknown kind
        ("vision=everything", "targets.vision:"),
        ("projector=", "targets.projector:"),
    ],
)
def test_targets_parse_invalid(text, prefix):
    with pytest.raises(InputError) as excinfo:
        Targets.parse(text)
    assert_user_error(excinfo, prefix)


# --------------------------------------------------------------------------------------------------- alpha


def test_alpha_rule_scaled_default():
    rule = AlphaRule()
    assert (rule.rule, rule.value) == ("scaled", 2.0)
    assert rule.alpha(8) == 16 and isinstance(rule.alpha(8), int)
    assert rule.alpha(32) == 64
    assert rule.alpha(1) == 2


def test_alpha_rule_scaled_fractional_multiplier():
    rule = AlphaRule("scaled", 1.5)
    assert rule.alpha(3) == 4.5
    assert rule.alpha(2) == 3 and isinstance(rule.alpha(2), int)


@pytest.mark.parametrize("rule", ["fixed", "rslora"])
def test_alpha_rule_fixed_and_rslora_ignore_rank(rule):
    alpha = AlphaRule(rule, 16)
    assert alpha.alpha(4) == alpha.alpha(64) == 16


@pytest.mark.parametrize("rule, value", [("bogus", 2), ("Scaled", 2), ("scaled", 0), ("fixed", -1), ("rslora", math.nan)])
def test_alpha_rule_invalid(rule, value):
    with pytest.raises(InputError) as excinfo:
        AlphaRule(rule, value)
    assert_user_error(excinfo, "alpha")


# --------------------------------------------------------------------------------------------------- spec


def test_allocation_spec_defaults():
    spec = AllocationSpec(ratio=Ratio.parse("1:4:1"), budget=Budget("rank", 8))
    assert spec.mode == "rank"
    assert spec.targets == Targets()
    assert spec.alpha == AlphaRule()


@pytest.mark.parametrize("mode", ["share", "rank"])
def test_allocation_spec_modes(mode):
    assert AllocationSpec(ratio=Ratio.parse("1:1:1"), budget=Budget("rank", 8), mode=mode).mode == mode


@pytest.mark.parametrize("mode", ["ranks", "", "audit", "SHARE"])
def test_allocation_spec_invalid_mode(mode):
    with pytest.raises(InputError) as excinfo:
        AllocationSpec(ratio=Ratio.parse("1:1:1"), budget=Budget("rank", 8), mode=mode)
    assert_user_error(excinfo, "mode:")


def test_spec_values_are_frozen():
    ratio = Ratio.parse("1:4:1")
    with pytest.raises(AttributeError):
        ratio.vision = 2.0  # type: ignore[misc]


def test_parameter_budgets_take_k_m_b_suffixes():
    from toolkit.calculator.spec import Budget
    from toolkit.training.settings import TrainSettings

    assert [Budget.parse("params", t).value for t in ("20M", "1.5b", "300k", "20,000,000")] == [2e7, 1.5e9, 3e5, 2e7]
    with pytest.raises(InputError, match=r"^budget \(params\): '20X' is not a number .*20M, 1.5B, 300k\)$"):
        Budget.parse("params", "20X")
    s = TrainSettings(model="demo", dataset="synthetic:shapes", ratio="1:1:1", budget_params="20M")
    assert s.budget_params == 20_000_000
