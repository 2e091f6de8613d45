"""Study checks on allocations: the budget tolerance, duplicate arms, and equal spend across compared runs.

Pure functions that the calculator page, the CLI, the sweep planner and the comparison call, so "budget-
matched" means the same thing everywhere.

    >>> budget_problem(a)                     # None, or "ratio 1:4:1: budget error +1.36% exceeds 1%"
    >>> duplicate_arms({"1:1:1": a, "1:2:1": b, "1:4:1": c})   # [["1:1:1", "1:2:1", "1:4:1"]] if caps merge them
    >>> spend_mismatch([23_486_464, 23_490_000])               # None: within 1 %
"""

from __future__ import annotations

BUDGET_TOLERANCE = 1.0
"""a study arm whose |budget error| exceeds this (in %) is refused by sweeps and flagged everywhere"""


def over_tolerance(budget_error: float | None, *, tolerance: float = BUDGET_TOLERANCE) -> bool:
    return budget_error is not None and abs(budget_error) > tolerance


def budget_flag(budget_error: float | None, *, tolerance: float = BUDGET_TOLERANCE) -> str:
    """A short visible flag for tables: '' within tolerance, otherwise 'over ±1%'."""
    return f"over ±{tolerance:g}%" if over_tolerance(budget_error, tolerance=tolerance) else ""


def budget_problem(allocation, *, label: str | None = None, tolerance: float = BUDGET_TOLERANCE) -> str | None:
    """One line naming the arm and its error when |budget error| exceeds the tolerance, else None."""
    if not over_tolerance(allocation.budget_error, tolerance=tolerance):
        return None
    name = label or ":".join(f"{w:g}" for w in allocation.ratio)
    return (f"ratio {name}: budget error {allocation.budget_error:+.2f}% exceeds the {tolerance:g}% tolerance "
            f"({allocation.total:,} of {allocation.budget:,} params, {allocation.rounding} rounding)")


def duplicate_arms(allocations: dict) -> list[list[str]]:
    """Groups (of two or more labels) whose allocations train exactly the same thing (same modules, ranks,
    alphas and fully trained layers), e.g. ratios that caps made identical. In the order first seen."""
    groups: dict[tuple, list[str]] = {}
    for label, a in allocations.items():
        groups.setdefault(a.signature(), []).append(label)
    return [labels for labels in groups.values() if len(labels) > 1]


def spend_mismatch(totals: list[int], *, tolerance: float = 0.01) -> str | None:
    """None when every trainable-parameter total is within `tolerance` (relative) of the largest; otherwise
    one line saying how far apart they are. What `compare` checks before calling runs budget-matched.

    >>> spend_mismatch([100, 99])
    >>> spend_mismatch([100, 90])
    'trainable parameters differ by 10.0% (90 to 100), more than the 1% tolerance'
    """
    values = [int(t) for t in totals if t is not None]
    if len(values) < 2:
        return None
    lo, hi = min(values), max(values)
    if hi <= 0 or (hi - lo) / hi <= tolerance:
        return None
    return (f"trainable parameters differ by {100 * (hi - lo) / hi:.1f}% ({lo:,} to {hi:,}), more than the "
            f"{100 * tolerance:g}% tolerance")
