"""Calibration of the comparison's verdict on simulated studies (deterministic by seed, a few seconds each).

A study: K ratios × S seeds, each run answering the same Q questions. A question's chance of being answered
right is its difficulty plus the run's offset (seed-to-seed noise, SD in points) plus the ratio's true effect;
each answer is a Bernoulli draw (question noise). Under the null (no effect) the verdict may say "positive" or
"weak positive" in at most ~5% of studies at α = 0.05 (asserted: ≤ 7%); a planted +2 point effect is found.
The tests go through the real statistics (toolkit.evaluation.stats) and the real verdict rules.
"""

from __future__ import annotations

import math

import numpy as np

from toolkit.evaluation import verdict as rules
from toolkit.evaluation.stats import holm, mean_ci, two_level_bootstrap

RATIOS = ("1:1:1", "1:2:1", "1:4:1", "2:4:1")


def simulate(rng, *, seeds: int, questions: int, seed_sd: float, effects: dict[str, float]) -> dict[str, np.ndarray]:
    """{ratio: (seeds, questions) accuracies in points} of one simulated study."""
    difficulty = rng.beta(3, 2, size=questions)  # mean 60% accuracy, varied questions
    out = {}
    for ratio in RATIOS:
        offsets = rng.normal(0, seed_sd / 100, size=(seeds, 1)) + effects.get(ratio, 0.0) / 100
        p = np.clip(difficulty[None, :] + offsets, 0, 1)
        out[ratio] = 100.0 * (rng.random((seeds, questions)) < p)
    return out


def equal_noise(seed_sd: float, questions: int, fewer: int) -> float:
    """The seed SD that makes a null study on `fewer` questions the equal of one with `seed_sd` on `questions`: the
    seed and question variances of delta keep their ratio (SD² ∝ 1/questions for both), so under the null t and its
    degrees of freedom have the same distribution and the verdict is calibrated alike, while the bootstrap, which
    costs in proportion to the questions (more once its arrays outgrow the CPU cache), runs several times faster.
    Only for null studies: a planted effect or the 1-point threshold is measured in points, which this rescales."""
    return seed_sd * math.sqrt(questions / fewer)


def verdict(study: dict[str, np.ndarray], *, n_boot: int, seed: int = 0) -> rules.Verdict:
    """The verdict `analyze` would give on these runs (seeds paired by index, as sweeps run them)."""
    base = study["1:1:1"]
    tests = {r: two_level_bootstrap(ratio=m, baseline=base, n_boot=n_boot, seed=seed)
             for r, m in study.items() if r != "1:1:1"}
    adjusted = dict(zip(tests, holm([t.p_value for t in tests.values()])))
    level = 1 - rules.ALPHA / len(tests)
    comparisons = {r: rules.Comparison(
        ratio=r, baseline="1:1:1", delta=t.delta, ci_low=t.ci_low, ci_high=t.ci_high, p_value=t.p_value,
        p_adjusted=adjusted[r], n_questions=base.shape[1], n_only_ratio=0, n_only_baseline=0, seeds=m.shape[0],
        baseline_seeds=base.shape[0], paired_seeds=t.paired_seeds, df=t.df, se=t.se, seed_var=t.seed_var,
        question_var=t.question_var, ci_simultaneous=t.ci(level)) for (r, t), m in
        zip(tests.items(), (study[r] for r in tests))}
    groups = []
    for r, m in study.items():
        accs = list(m.mean(axis=1))
        mean, sd, half = mean_ci(accs)
        groups.append(rules.Group(ratio=r, adapters=[], seeds=list(range(len(accs))), accuracies=accs, mean=mean,
                                    std=sd, ci_low=None if half is None else mean - half,
                                    ci_high=None if half is None else mean + half, trainable_params=0, ranks="",
                                    per_answer_type={}))
    groups.sort(key=lambda g: -g.mean)
    return rules.verdict(groups, comparisons, "1:1:1")


def test_null_studies_rarely_come_out_positive():
    # seed SD 1.2 points at 2,000 questions, simulated as its equal at 1,000 (see equal_noise): over 400 null studies
    # 0.5% came out positive at 2,000 questions, 0.75% at 1,000
    rng = np.random.default_rng(13)
    labels = [verdict(simulate(rng, seeds=3, questions=1000, seed_sd=equal_noise(1.2, 2000, 1000), effects={}),
                      n_boot=200).label for _ in range(150)]
    false_positive = sum(label in ("positive", "weak positive") for label in labels) / len(labels)
    assert false_positive <= 0.07, labels
    assert "inconclusive" in labels  # 3 seeds this noisy cannot rule out a point either way


def test_null_studies_with_small_seed_noise_stay_calibrated():
    # seed noise small next to question noise: seed SD 0.6 points at 4,000 questions, simulated as its equal at 1,000
    # (see equal_noise): over 300 null studies none came out positive at 4,000 questions, nor at 1,000
    rng = np.random.default_rng(14)
    labels = [verdict(simulate(rng, seeds=3, questions=1000, seed_sd=equal_noise(0.6, 4000, 1000), effects={}),
                      n_boot=200).label for _ in range(100)]
    assert sum(label in ("positive", "weak positive") for label in labels) / len(labels) <= 0.07, labels


def test_a_planted_two_point_effect_is_found_with_enough_seeds():
    rng = np.random.default_rng(15)
    verdicts = [verdict(simulate(rng, seeds=10, questions=5000, seed_sd=0.6, effects={"1:4:1": 2.0}), n_boot=200)
                for _ in range(30)]
    found = [v for v in verdicts if v.label == "positive" and v.ratio == "1:4:1"]
    assert len(found) / len(verdicts) >= 0.8, [v.label for v in verdicts]
    assert all(v.label != "negative" for v in verdicts)


def test_no_effect_with_many_seeds_is_negative():
    rng = np.random.default_rng(16)
    verdicts = [verdict(simulate(rng, seeds=20, questions=8000, seed_sd=0.3, effects={}), n_boot=200)
                for _ in range(10)]
    assert sum(v.label == "negative" for v in verdicts) >= 7, [v.reason for v in verdicts]


def test_one_seed_is_always_inconclusive():
    rng = np.random.default_rng(17)
    v = verdict(simulate(rng, seeds=1, questions=2000, seed_sd=1.2, effects={"1:4:1": 10.0}), n_boot=200)
    assert v.label == "inconclusive" and "one seed is never enough" in v.reason
