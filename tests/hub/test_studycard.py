"""The study section of a published adapter's card (toolkit/hub/studycard.py): the budget-matched study it came
from, with the numbers Compare gives, so a card never shows a lucky seed's figure alone."""

from __future__ import annotations

import pytest

from tests.helpers.adapters import flip, pattern, sweep, write_adapter
from toolkit.evaluation import compare
from toolkit.hub.modelcard import render_card


def test_the_best_run_of_a_study_says_so_and_gives_its_ratio_and_the_verdict(tmp_path):
    sweep(tmp_path, {"1:1:1": (0, 0), "1:4:1": (40, 0), "2:4:1": (8, 0)})
    a = compare.analyze(compare.scan(tmp_path).rows)
    best = a.best["name"]
    card = render_card(tmp_path / best)
    section = card[card.index("## Study"):card.index("## Training")]
    assert "one of 9 budget-matched runs (3 ratios, seeds as replicates)" in section
    groups, tests = {g.ratio: g for g in a.groups}, {c.ratio: c for c in a.comparisons}
    row = next(line for line in section.splitlines() if line.startswith("| **1:4:1** (this adapter's) |"))
    assert row == (f"| **1:4:1** (this adapter's) | 3 | {groups['1:4:1'].mean:.2f} | {groups['1:4:1'].ci_low:.2f} – "
                   f"{groups['1:4:1'].ci_high:.2f} | {tests['1:4:1'].delta:+.2f} | {tests['1:4:1'].ci_low:+.2f} – "
                   f"{tests['1:4:1'].ci_high:+.2f} | {tests['1:4:1'].p_adjusted:.4f} |")  # what Compare computes
    assert "| 1:1:1 | 3 |" in section and "| baseline |" in section
    assert "**Verdict: positive.** 1:4:1 beats the baseline 1:1:1 by +10.00 points" in section
    assert f"its ratio's mean over 3 seed(s) is {groups['1:4:1'].mean:.2f}%." in section
    assert ("It is the study's best adapter (the best seed of the ratio with the highest mean), picked on these same "
            "questions, so its own figure is optimistic") in section
    # another seed of the same ratio: the same study, without the warning about being picked
    other = next(n for n in groups["1:4:1"].adapters if n != best)
    assert "best adapter" not in render_card(tmp_path / other)


def test_an_inconclusive_study_is_said_to_be_so_on_its_best_runs_card(tmp_path):
    for s, (uniform, other) in enumerate(((180, 200), (240, 252))):  # seeds far apart: the data cannot decide
        write_adapter(tmp_path, f"u{s}", ratio=(1, 1, 1), seed=s, accs=pattern(uniform, offset=7 * s))
        write_adapter(tmp_path, f"p{s}", ratio=(1, 4, 1), seed=s, accs=pattern(other, offset=7 * s))
    best = compare.analyze(compare.scan(tmp_path).rows).best["name"]
    card = render_card(tmp_path / best)
    assert "**Verdict: inconclusive.** No ratio is significantly better than 1:1:1" in card


@pytest.mark.parametrize("peers", ["none", "other settings", "other budget", "other eval set"])
def test_a_run_without_peers_gets_no_study_section(tmp_path, peers):
    me = write_adapter(tmp_path, "me", ratio=(1, 4, 1), accs=pattern(220))
    kw = {"none": None, "other settings": {"training": {"lr": 0.1}}, "other budget": {"budget": 50_000},
          "other eval set": {"tag": "other__val__n400"}}[peers]
    if kw is not None:
        for s in (0, 1):
            write_adapter(tmp_path, f"u{s}", ratio=(1, 1, 1), seed=s, accs=flip(pattern(200), s), **kw)
    card = render_card(me)
    assert "## Study" not in card and "## Evaluation" in card
