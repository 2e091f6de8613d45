"""Comparison of evaluated adapters: stats, paired bootstrap, verdict, best adapter, Pareto, export, CLI, page.

Adapter folders are written in tmp_path exactly as the shared contract describes (cmba.json, eval/<tag>/
results.json and predictions.jsonl, metrics.jsonl) from per-question accuracies whose comparison is known.
"""

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers.adapters import TAG, TYPES, N, pattern, sweep, write_adapter
from tests.helpers.jobscript import PATIENCE
from toolkit.errors import InputError
from toolkit.evaluation import charts, compare, stats, tables

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "compare.py")
# ------------------------------------------------------------------------------ statistics


@pytest.mark.parametrize(("p", "df", "expected"), [
    (0.975, 1, math.tan(math.pi * 0.475)),                          # Cauchy: closed form
    (0.975, 2, 0.95 * math.sqrt(2 / (4 * 0.975 * 0.025))),          # df = 2: closed form
    (0.975, 4, 2.776445), (0.975, 9, 2.262157), (0.975, 29, 2.045230), (0.95, 5, 2.015048), (0.995, 10, 3.169273),
    (0.975, 1000, 1.962339),
])
def test_t_quantile_matches_tables(p, df, expected):
    assert stats.t_quantile(p, df) == pytest.approx(expected, abs=2e-6)
    assert stats.t_quantile(1 - p, df) == pytest.approx(-expected, abs=2e-6)


def test_mean_ci_is_the_t_formula_and_undefined_for_one_value():
    mean, sd, half = stats.mean_ci([60.0, 62.0, 64.0])
    assert (mean, sd) == (62.0, 2.0)
    assert half == pytest.approx(4.302652729911275 * 2 / math.sqrt(3), rel=1e-9)
    assert stats.mean_ci([61.0]) == (61.0, None, None)


def test_paired_bootstrap_known_cases():
    assert stats.paired_bootstrap([0.0] * 50) == (0.0, 0.0, 0.0, 1.0)
    delta, lo, hi, p = stats.paired_bootstrap([100.0] * 40 + [0.0] * 360, n_boot=2000)
    assert delta == pytest.approx(10.0) and 6 < lo < 10 < hi < 14 and p < 0.002
    # the same seed gives the same answer
    assert stats.paired_bootstrap([1.0, -2.0, 3.0] * 20, n_boot=500) == stats.paired_bootstrap(
        [1.0, -2.0, 3.0] * 20, n_boot=500)


def test_pareto_front_on_a_constructed_set():
    rows = [{"name": n, "trainable_params": p, "accuracy": a} for n, p, a in [
        ("small", 100, 50.0), ("mid", 200, 60.0), ("big", 400, 70.0),
        ("worse", 300, 55.0),     # beaten by mid (fewer params, more accuracy)
        ("same-cost", 200, 58.0),  # beaten by mid (equal params, less accuracy)
        ("twin", 400, 70.0),       # identical to big: neither beats the other
    ]]
    assert compare.pareto_front(rows) == ["small", "mid", "big", "twin"]


# ------------------------------------------------------------------------------ store and analysis


def test_identical_ratios_give_zero_delta_and_a_negative_verdict(tmp_path):
    sweep(tmp_path, {"1:1:1": (0, 0), "1:4:1": (0, 0)})
    a = compare.analyze(compare.scan(tmp_path).rows)
    (c,) = a.comparisons
    assert (c.ratio, c.baseline, c.delta, c.p_value) == ("1:4:1", "1:1:1", 0.0, 1.0)
    # nothing varied, yet not [0, 0] (issue #27): what no discordance among the paired units can still hide
    # (exact binomial bound for 0 events), a point or less on 400 questions
    half = 100 * (1 - 0.025 ** (1 / c.n_clusters))
    assert (c.ci_low, c.ci_high) == pytest.approx((-half, half)) and 0.2 < half < 1
    # the 4-step confirmation seen on the Study page: 3 seeds x 16 questions, all alike -> about +-20.6 points
    same = np.tile(np.array([100.0] * 6 + [0.0] * 10), (3, 1))
    t = stats.two_level_bootstrap(ratio=same, baseline=same)
    assert t.se == 0 and (t.ci_low, t.ci_high) == pytest.approx((-20.6, 20.6), abs=0.05)
    assert t.ci(0.99)[1] > t.ci_high  # a wider level, a wider bound
    assert not c.significant and c.n_questions == N
    assert a.verdict.label == "negative" and "no ratio beats the baseline 1:1:1" in a.verdict.reason


def test_clearly_better_ratio_is_positive(tmp_path):
    sweep(tmp_path, {"1:1:1": (0, 0), "1:4:1": (40, 0), "2:4:1": (8, 0)})
    a = compare.analyze(compare.scan(tmp_path).rows)
    cmp = {c.ratio: c for c in a.comparisons}
    assert cmp["1:4:1"].delta == pytest.approx(10.0) and cmp["2:4:1"].delta == pytest.approx(2.0)
    assert cmp["1:4:1"].ci_low > 5 and cmp["1:4:1"].p_value < 0.001
    assert a.verdict.label == "positive" and a.verdict.ratio == "1:4:1"
    assert a.verdict.reason.startswith("1:4:1 beats the baseline 1:1:1 by +10.00 points")
    assert [g.ratio for g in a.groups] == ["1:4:1", "2:4:1", "1:1:1"]
    assert a.best["ratio"] == "1:4:1" and a.best["seed"] == 2  # seed 2 has the most correct answers


def test_small_noisy_gain_is_inconclusive_with_the_seeds_needed(tmp_path):
    # +6 net of 400 (40 up, 34 down): +1.5 points that the noise swamps; a positive Δ alone is no verdict
    sweep(tmp_path, {"1:1:1": (0, 0), "1:4:1": (40, 34)})
    a = compare.analyze(compare.scan(tmp_path).rows)
    assert a.comparisons[0].delta == pytest.approx(1.5) and a.comparisons[0].p_value > 0.05
    assert a.verdict.label == "inconclusive" and "a gain of 1 point is not ruled out" in a.verdict.reason
    assert a.verdict.questions_needed is not None and a.verdict.questions_needed > N  # question noise dominates
    assert "questions" in a.verdict.reason and a.verdict.ratio == "1:4:1"


def test_significant_gain_below_one_point_is_weak_positive(tmp_path):
    base = pattern(200)
    for s in (0, 1):
        write_adapter(tmp_path, f"u{s}", ratio=(1, 1, 1), seed=s, accs=base)
        write_adapter(tmp_path, f"p{s}", ratio=(1, 4, 1), seed=s, accs=[a + 0.008 if a == 0 else a for a in base])
    a = compare.analyze(compare.scan(tmp_path).rows)
    assert a.comparisons[0].delta == pytest.approx(0.4) and a.comparisons[0].significant
    assert a.verdict.label == "weak positive" and "the gain is not above 1 point" in a.verdict.reason


def test_the_verdict_is_against_the_chosen_baseline(tmp_path):
    sweep(tmp_path, {"1:1:1": (20, 0), "1:4:1": (0, 0)})
    a = compare.analyze(compare.scan(tmp_path).rows, baseline="1:4:1")
    assert a.verdict.label == "positive" and a.verdict.reason.startswith("1:1:1 beats the baseline 1:4:1 by +5.00")
    b = compare.analyze(compare.scan(tmp_path).rows)  # against uniform, 1:4:1's -5 points rule out a gain
    assert b.verdict.label == "negative" and "every ratio's simultaneous 95% CI upper bound is below +1" in \
        b.verdict.reason


def test_group_ci_and_single_seed(tmp_path):
    for s, correct in enumerate((240, 248, 256)):  # 60, 62, 64 %
        write_adapter(tmp_path, f"u{s}", ratio=(1, 1, 1), seed=s, accs=pattern(correct))
    write_adapter(tmp_path, "p0", ratio=(2, 8, 2), seed=0, accs=pattern(250))  # 2:8:2 is the 1:4:1 ratio
    write_adapter(tmp_path, "p1", ratio=(1, 4, 1), seed=1, accs=pattern(250))
    write_adapter(tmp_path, "s0", ratio=(2, 4, 1), seed=0, accs=pattern(230))
    a = compare.analyze(compare.scan(tmp_path).rows)
    groups = {g.ratio: g for g in a.groups}
    u = groups["1:1:1"]
    # seeds (t, sd 2, 3 seeds) and the 400 questions they share (binomial at 62 %), Welch-Satterthwaite df
    seed_var, q_var = 2 ** 2 / 3, 1e4 * 0.62 * 0.38 / N
    df = (seed_var + q_var) ** 2 / (seed_var ** 2 / 2)
    assert u.mean == 62.0 and u.ci_high - u.mean == pytest.approx(
        stats.t_quantile(0.975, df) * math.sqrt(seed_var + q_var))
    assert u.ci_high - u.mean > 4.302652729911275 * 2 / math.sqrt(3) * 0.99  # never narrower than the seeds alone
    assert groups["2:8:2"].adapters == ["p0", "p1"]  # one ratio, labelled as first seen
    assert groups["2:4:1"].ci_low is None and any("single seed" in n for n in a.notes)
    assert tables.group_table(a).set_index("ratio").loc["2:4:1", "95% CI"] == "n/a (1 seed)"


def test_a_ratio_interval_stays_within_what_an_accuracy_can_be(tmp_path):
    """Two seeds far apart give a t interval wider than [0, 100]; the mean of accuracies cannot lie outside it."""
    write_adapter(tmp_path, "a0", ratio=(1, 1, 1), seed=0, accs=pattern(N * 9 // 10))
    write_adapter(tmp_path, "a1", ratio=(1, 1, 1), seed=1, accs=pattern(N // 10))
    [g] = compare.analyze(compare.scan(tmp_path).rows).groups
    assert g.mean == pytest.approx(50.0) and (g.ci_low, g.ci_high) == (0.0, 100.0)
    assert stats.mean_ci(g.accuracies)[2] > 50  # the unclipped half-width (t with 1 degree of freedom) is far wider
    # shown as what it is, never as "0.00 – 100.00" (issue #27): the table, `compare` and the model card share it
    assert tables.ci_text(g) == "uninformative: 2 seeds 80.00 points apart; add seeds"
    # cut at one end only: the interval is shown, and marked
    write_adapter(tmp_path / "one", "b0", ratio=(1, 1, 1), seed=0, accs=pattern(N * 3 // 100))
    write_adapter(tmp_path / "one", "b1", ratio=(1, 1, 1), seed=1, accs=pattern(N * 9 // 100))
    [g] = compare.analyze(compare.scan(tmp_path / "one").rows).groups
    assert g.ci_low == 0.0 and tables.ci_text(g) == f"0.00 – {g.ci_high:.2f} (cut at 0)"


def test_seeds_that_agree_exactly_still_leave_the_question_level(tmp_path):
    """Deterministic runs give equal accuracies: the interval is the questions' (normal, binomial), never 0 wide."""
    for s in (0, 1):
        write_adapter(tmp_path, f"a{s}", ratio=(1, 1, 1), seed=s, accs=pattern(N // 2))
    [g] = compare.analyze(compare.scan(tmp_path).rows).groups
    assert g.std == 0 and g.ci_high - g.mean == pytest.approx(1.959964 * 100 * math.sqrt(0.25 / N), rel=1e-4)


def test_mismatched_base_models_budgets_and_eval_sets_are_refused(tmp_path):
    write_adapter(tmp_path, "a", accs=pattern(200))
    write_adapter(tmp_path, "b", base_model="llava-1.5-7b", ratio=(1, 4, 1), accs=pattern(210))
    write_adapter(tmp_path, "c", budget=200_000, ratio=(1, 4, 1), accs=pattern(220))
    rows = compare.scan(tmp_path).rows
    with pytest.raises(InputError) as exc:
        compare.analyze(rows)
    msg = str(exc.value)
    assert "base model (demo: 2, llava-1.5-7b: 1)" in msg and "budget (100000: 2, 200000: 1)" in msg
    assert "eval set" not in msg and "--model" in msg
    a = compare.analyze(rows, model="demo", budget="100,000")
    assert [r["name"] for r in a.rows] == ["a"] and a.verdict.label == "inconclusive"
    with pytest.raises(InputError, match=r"model: no evaluated adapter matches 'nope' \(available: demo, llava"):
        compare.analyze(rows, model="nope")


def test_store_reports_what_it_cannot_use(tmp_path):
    sweep(tmp_path, {"1:1:1": (0, 0)}, seeds=(0,))
    (tmp_path / "half-trained").mkdir()
    (tmp_path / "half-trained" / "adapter_config.json").write_text("{}")
    write_adapter(tmp_path, "fresh", accs=pattern(10)).joinpath("eval", TAG, "results.json").unlink()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "cmba.json").write_text("{not json")
    store = compare.scan(tmp_path)
    assert [r["name"] for r in store.rows] == ["r1-1-1-s0"]
    assert store.no_cmba == ["half-trained"] and store.not_evaluated == ["fresh"]
    assert len(store.unreadable) == 1 and store.unreadable[0].startswith("broken: cmba.json")
    assert "1 without cmba.json (half-trained)" in store.summary()
    (tmp_path / "training").mkdir()  # a run in progress: its run.json, no cmba.json yet
    (tmp_path / "training" / "run.json").write_text('{"fingerprint": "f", "max_steps": 10}')
    store = compare.scan(tmp_path)
    assert store.in_progress == ["training"] and store.no_cmba == ["half-trained"]
    assert "1 unfinished runs (training, or stopped before the end) (training)" in store.summary()
    assert compare.scan(tmp_path / "nowhere").rows == []


def test_base_reference_and_different_question_sets(tmp_path):
    sweep(tmp_path, {"1:1:1": (0, 0)}, seeds=(0,))
    write_adapter(tmp_path, "short", ratio=(1, 4, 1), accs=pattern(190, n=380))
    write_adapter(tmp_path, "base--demo", kind="base", accs=pattern(100))
    a = compare.analyze(compare.scan(tmp_path).rows, dataset="synthetic:shapes")
    assert a.base_reference == 25.0 and all(r["kind"] == "adapter" for r in a.rows)
    (c,) = a.comparisons
    assert (c.n_questions, c.n_only_ratio, c.n_only_baseline) == (380, 0, 20)
    assert any("380 questions paired" in n for n in a.notes)


def test_best_adapter_tie_goes_to_fewer_params(tmp_path):
    write_adapter(tmp_path, "u", ratio=(1, 1, 1), accs=pattern(200))
    write_adapter(tmp_path, "heavy", ratio=(1, 4, 1), seed=0, accs=pattern(240), params=100_400)
    write_adapter(tmp_path, "light", ratio=(1, 4, 1), seed=1, accs=pattern(240), params=99_800)
    assert compare.analyze(compare.scan(tmp_path).rows).best["name"] == "light"


# ------------------------------------------------------------------------------ export, charts, CLI


def test_csv_and_json_round_trip(tmp_path):
    store = tmp_path / "store"
    sweep(store, {"1:1:1": (0, 0), "1:4:1": (40, 0)})
    a = compare.analyze(compare.scan(store).rows, n_boot=1000)
    tables.to_csv(a.rows, tmp_path / "t.csv")
    back = pd.read_csv(tmp_path / "t.csv")
    assert list(back["name"]) == [r["name"] for r in a.rows]
    assert list(back["accuracy"]) == [r["accuracy"] for r in a.rows]
    assert list(back["ratio"]) == [r["ratio"] for r in a.rows] and "acc yes/no" in back.columns
    doc = json.loads(tables.to_json(a))
    assert doc["verdict"]["label"] == "positive" and doc["best"]["name"] == a.best["name"]
    assert [g["ratio"] for g in doc["groups"]] == ["1:4:1", "1:1:1"]
    assert doc["comparisons"][0]["delta"] == pytest.approx(10.0) and doc["comparisons"][0]["significant"] is True


def test_charts_carry_the_data(tmp_path):
    sweep(tmp_path, {"1:1:1": (0, 0), "1:4:1": (40, 0)}, seeds=(0, 1))
    a = compare.analyze(compare.scan(tmp_path).rows, n_boot=500)
    curves = compare.loss_curves(a.rows)
    assert len(curves) == 4 * 3 and set(curves["ratio"]) == {"1:1:1", "1:4:1"}
    for chart in (charts.accuracy_chart(a), charts.pareto_chart(a.rows), charts.loss_chart(curves),
                  charts.answer_type_chart(a)):
        spec = chart.to_dict()
        assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/")
    types = charts.answer_type_chart(a).data  # each answer type says how many questions it has
    assert set(types["answer type"]) == {"yes/no (n=134)", "number (n=133)", "other (n=133)"} and len(types) == 2 * 3
    assert set(charts.answer_type_chart(a, counts={}).data["answer type"]) == set(TYPES)
    one = compare.analyze([r for r in compare.scan(tmp_path).rows if r["name"] == "r1-1-1-s0"], n_boot=50)
    y = charts.accuracy_chart(one).to_dict()["layer"][0]["encoding"]["y"]  # one adapter: a 2-point-wide axis
    assert y["scale"] == {"domain": [one.rows[0]["accuracy"] - 1, one.rows[0]["accuracy"] + 1], "nice": False}
    assert y["axis"]["format"] == ".1f"


def run_cli(argv, monkeypatch, capsys):
    import toolkit.cli as cli

    if "toolkit.cli.compare" not in cli.COMMAND_MODULES:  # until it is wired into toolkit/cli.py
        monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES, "toolkit.cli.compare"])
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_compare_cli_json_and_text(tmp_path, monkeypatch, capsys):
    sweep(tmp_path / "store", {"1:1:1": (0, 0), "1:4:1": (40, 0)})
    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(tmp_path / "store"))
    code, out, err = run_cli(["compare", "--json", "--csv", str(tmp_path / "t.csv")], monkeypatch, capsys)
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert doc["verdict"]["label"] == "positive" and doc["store"]["no_cmba"] == []
    assert len(pd.read_csv(tmp_path / "t.csv")) == 6
    code, out, _ = run_cli(["compare", "--baseline", "1:4:1"], monkeypatch, capsys)
    assert code == 0 and "verdict: negative" in out and "best adapter: r1-4-1-s2" in out


def test_compare_cli_errors_are_one_line(tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(["compare", "--adapters-dir", str(tmp_path)], monkeypatch, capsys)
    assert code == 2 and err.startswith("error: compare: no evaluated adapters") and err.count("\n") == 1
    write_adapter(tmp_path, "a", accs=pattern(10))
    code, _, err = run_cli(["compare", "--adapters-dir", str(tmp_path), "--budget", "7"], monkeypatch, capsys)
    assert code == 2 and err.startswith("error: budget: no evaluated adapter matches '7'")


def test_score_cli(tmp_path, monkeypatch, capsys):
    (tmp_path / "p.jsonl").write_text('{"question_id": 1, "answer": "Two"}\n{"question_id": 2, "answer": "no"}\n')
    (tmp_path / "a.jsonl").write_text(
        '{"question_id": 1, "answers": ["2", "2", "2", "two"], "answer_type": "number"}\n'
        '{"question_id": 2, "answers": ["yes"], "answer_type": "yes/no"}\n')
    argv = ["score", "--predictions", str(tmp_path / "p.jsonl"), "--annotations", str(tmp_path / "a.jsonl")]
    code, out, _ = run_cli([*argv, "--json"], monkeypatch, capsys)
    assert code == 0 and json.loads(out) == {"overall": 50.0, "per_answer_type": {"number": 100.0, "yes/no": 0.0},
                                             "per_question_type": {}, "n": 2}
    (tmp_path / "p.jsonl").write_text('{"question_id": 1, "answer": "2"}\n')
    code, _, err = run_cli(argv, monkeypatch, capsys)
    assert code == 2 and "1 annotated question without prediction (e.g. 2)" in err
    code, out, _ = run_cli([*argv, "--allow-missing"], monkeypatch, capsys)
    assert code == 0 and "VQA accuracy 100.00% over 1 questions" in out
    assert "skipped: 0 predictions without annotation, 1 annotated question without prediction" in out


def test_help_is_fast_to_build():
    from toolkit.cli import compare as cli_eval

    sub = argparse.ArgumentParser().add_subparsers()
    cli_eval.register(sub)
    assert set(sub.choices) == {"score", "compare"}


# ------------------------------------------------------------------------------ the page


def page(monkeypatch, store: Path) -> AppTest:
    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(store))
    at = AppTest.from_file(PAGE, default_timeout=PATIENCE)
    at.run()
    assert not at.exception
    return at


def test_page_shows_table_verdict_and_publish(tmp_path, monkeypatch):
    sweep(tmp_path, {"1:1:1": (0, 0), "1:4:1": (40, 0)})
    write_adapter(tmp_path, "other-model", base_model="qwen2-vl-2b", accs=pattern(300))
    (tmp_path / "half-trained").mkdir()
    at = page(monkeypatch, tmp_path)
    assert at.selectbox(key="cmp_model").value == "demo"  # the model with most adapters is the default
    assert at.success[0].value.startswith("**Verdict: positive** — 1:4:1 beats the baseline 1:1:1")
    groups = at.dataframe[0].value
    assert list(groups["ratio"]) == ["1:4:1", "1:1:1 (baseline)"] and list(groups["seeds"]) == [3, 3]
    table = at.dataframe[1].value
    assert len(table) == 6 and set(table["ratio"]) == {"1:1:1", "1:4:1"}
    assert any("half-trained" in c.value for c in at.caption)
    assert any(m.value == "**Best adapter:** `r1-4-1-s2`" for m in at.markdown)  # whole, not cut to fit a metric
    counts = next(c.value for c in at.caption if c.value.startswith("Questions per answer type"))
    assert counts == "Questions per answer type: number 133, other 133, yes/no 134"
    at.button[0].click().run()
    assert at.session_state["publish_adapter"] == str(tmp_path / "r1-4-1-s2")
    assert any("publish page is not available" in i.value for i in at.info)

    at.selectbox(key="cmp_baseline").set_value("1:4:1").run()
    assert at.info[0].value.startswith("**Verdict: negative**")
    at.selectbox(key="cmp_model").set_value("qwen2-vl-2b").run()
    assert not at.exception and at.warning[0].value.startswith("**Verdict: inconclusive**")
    assert len(at.dataframe[1].value) == 1


def test_page_empty_state(tmp_path, monkeypatch):
    (tmp_path / "half-trained").mkdir()
    at = page(monkeypatch, tmp_path)
    assert "train and evaluate adapters first" in at.info[0].value
    assert "python -m toolkit sweep" in at.code[0].value and not at.dataframe
    assert "1 without cmba.json (half-trained)" in at.caption[0].value


def test_bootstrap_does_not_depend_on_hash_order(tmp_path):
    sweep(tmp_path, {"1:1:1": (0, 0), "1:4:1": (12, 4)})
    code = ("import sys; from toolkit.evaluation import compare; c = compare.analyze(compare.scan(sys.argv[1]).rows, n_boot=300)"
            ".comparisons[0]; print(c.ci_low, c.ci_high, c.p_value)")
    here = compare.analyze(compare.scan(tmp_path).rows, n_boot=300).comparisons[0]
    other_seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"  # pytest itself runs with another one
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=Path(__file__).resolve().parents[2],
                         capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": other_seed}, check=True)
    assert out.stdout.split() == [str(here.ci_low), str(here.ci_high), str(here.p_value)]


# ------------------------------------------------------------------------------ issue #13: an honest verdict


def test_one_seed_and_few_questions_is_inconclusive_not_negative(tmp_path):
    write_adapter(tmp_path, "u", ratio=(1, 1, 1), accs=pattern(8, n=16))
    write_adapter(tmp_path, "p", ratio=(1, 4, 1), accs=pattern(7, n=16, offset=3))
    a = compare.analyze(compare.scan(tmp_path).rows)
    assert a.verdict.label == "inconclusive" and "one seed is never enough" in a.verdict.reason


def test_holm_adjusts_the_comparisons_with_the_baseline(tmp_path):
    sweep(tmp_path, {"1:1:1": (0, 0), "1:4:1": (40, 30), "2:4:1": (40, 36), "1:2:1": (40, 38)})
    a = compare.analyze(compare.scan(tmp_path).rows, n_boot=500)
    raw = [c.p_value for c in a.comparisons]
    assert [c.p_adjusted for c in a.comparisons] == stats.holm(raw)
    smallest = min(a.comparisons, key=lambda c: c.p_value)
    assert smallest.p_adjusted == pytest.approx(min(1.0, 3 * smallest.p_value))
    assert all(c.p_adjusted >= c.p_value for c in a.comparisons)
    assert "p (Holm)" in tables.group_table(a).columns


def test_runs_with_other_settings_are_kept_apart(tmp_path):
    sweep(tmp_path, {"1:1:1": (0, 0), "1:4:1": (40, 0)})
    write_adapter(tmp_path, "lr-high", ratio=(1, 4, 1), seed=5, accs=pattern(300), training={"learning_rate": 1e-3})
    a = compare.analyze(compare.scan(tmp_path).rows, n_boot=500)
    assert "lr-high" not in {r["name"] for r in a.rows} and len(a.groups[0].seeds) == 3
    (apart,) = a.kept_apart
    assert apart["adapters"] == ["lr-high"] and apart["differs"] == {"training.learning_rate": [None, 1e-3]}
    doc = tables.to_dict(a)
    assert doc["kept_apart"][0]["differs"]["training.learning_rate"] == [None, 1e-3]
    alone = compare.analyze(compare.scan(tmp_path).rows, settings=apart["fingerprint"])
    assert [r["name"] for r in alone.rows] == ["lr-high"] and alone.verdict.label == "inconclusive"


def test_select_on_one_eval_set_report_on_another(tmp_path):
    sweep(tmp_path, {"1:1:1": (0, 0), "1:4:1": (40, 0)})
    for s in (0, 1, 2):  # on the test split, seed 0 is the best 1:4:1 run; on val it is seed 2
        write_adapter(tmp_path, f"r1-4-1-s{s}", ratio=(1, 4, 1), seed=s, tag="synthetic-shapes__test__n400",
                      accs=pattern(260 - 5 * s))
        write_adapter(tmp_path, f"r1-1-1-s{s}", ratio=(1, 1, 1), seed=s, tag="synthetic-shapes__test__n400",
                      accs=pattern(200))
    a = compare.analyze(compare.scan(tmp_path).rows, select_on=TAG, report_on="synthetic-shapes__test__n400",
                        n_boot=300)
    assert a.best["name"] == "r1-4-1-s2" and a.best["selected_on"] == TAG
    assert a.best["accuracy"] == 62.5 and a.best["selection_accuracy"] == 62.0  # the report split's figure
    assert a.selection == {"select_on": TAG, "report_on": "synthetic-shapes__test__n400", "same_questions": False}
    with pytest.raises(InputError, match="select-on: must differ from report-on"):
        compare.analyze(compare.scan(tmp_path).rows, select_on=TAG, report_on=TAG)
    same = compare.analyze(compare.scan(tmp_path).rows, dataset=TAG, n_boot=300)
    assert same.selection["same_questions"] and any("selected and reported on the same" in n for n in same.notes)


def test_every_adapter_below_the_base_model_is_flagged(tmp_path, monkeypatch, capsys):
    sweep(tmp_path, {"1:1:1": (0, 0), "1:4:1": (40, 0)})
    write_adapter(tmp_path, "base--demo", kind="base", accs=pattern(390))
    a = compare.analyze(compare.scan(tmp_path).rows, n_boot=300)
    assert a.below_base and a.base_row["name"] == "base--demo" and a.base_reference == 97.5
    assert tables.group_table(a)["ratio"].iloc[-1] == "base model (no adapter)"
    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(tmp_path))
    code, out, _ = run_cli(["compare", "--json"], monkeypatch, capsys)
    doc = json.loads(out)
    assert code == 0 and doc["below_base"] is True and doc["base_row"]["accuracy"] == 97.5
    assert "p_adjusted" in doc["comparisons"][0] and doc["verdict"]["reason"]
    at = page(monkeypatch, tmp_path)
    assert any("below the base model alone" in w.value for w in at.warning)
    assert at.button[0].proto.type != "primary"


def test_runs_whose_spend_differs_are_not_compared(tmp_path):
    """The label says "rank-8 budget"; compare checks what each run actually trained (within 1 %)."""
    write_adapter(tmp_path, "uniform", ratio=(1, 1, 1), seed=0, accs=pattern(240), params=110_080)
    write_adapter(tmp_path, "cheap", ratio=(1, 4, 1), seed=0, accs=pattern(240), params=105_728)  # -3.95 %
    with pytest.raises(InputError, match=r"not budget-matched: trainable parameters differ by 4\.0%"):
        compare.analyze(compare.scan(tmp_path).rows)


def test_baseline_picks_the_one_eval_set_it_can_be_compared_on(tmp_path, monkeypatch, capsys):
    sweep(tmp_path, {"1:1:1": (0, 0), "1:4:1": (40, 0)}, seeds=(0, 1))
    other = "synthetic-shapes__test__n400"  # a second eval set where only 1:4:1 was evaluated
    for s in (0, 1):
        write_adapter(tmp_path, f"r1-4-1-s{s}", ratio=(1, 4, 1), seed=s, tag=other, accs=pattern(250))
    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(tmp_path))
    code, out, err = run_cli(["compare", "--baseline", "1:1:1"], monkeypatch, capsys)
    assert code == 0 and err == "" and f"eval set {TAG}" in out
    assert f"note: eval set {TAG} compared: the one with the baseline 1:1:1 and the most other ratios ({other} left " \
           "out" in out
    for s in (0, 1):  # now both eval sets hold both ratios, as many adapters each: the user chooses, told the flags
        write_adapter(tmp_path, f"r1-1-1-s{s}", ratio=(1, 1, 1), seed=s, tag=other, accs=pattern(200))
    code, _, err = run_cli(["compare", "--baseline", "1:1:1"], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.rstrip().endswith(f"compare one at a time: pass --dataset {other} or --dataset {TAG}")


def test_a_study_is_compared_on_its_own_eval_set_beside_its_confirmation(tmp_path, monkeypatch, capsys):
    """A study (3 ratios, validation) and its confirmation (1:4:1 and 1:1:1 on fresh seeds, test): `compare
    --baseline 1:1:1` takes the study's eval set, says so, and names the other."""
    sweep(tmp_path, {"1:1:1": (0, 0), "1:4:1": (40, 0), "4:1:1": (0, 20)}, seeds=(0, 1))
    other = "synthetic-shapes__test__n400"
    for s in (2, 3):
        for ratio, level in (((1, 4, 1), 250), ((1, 1, 1), 210)):
            write_adapter(tmp_path, f"c{ratio[0]}{ratio[1]}-s{s}", ratio=ratio, seed=s, tag=other,
                          accs=pattern(level + s))
    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(tmp_path))
    code, out, err = run_cli(["compare", "--baseline", "1:1:1"], monkeypatch, capsys)
    assert code == 0 and err == "" and f"note: eval set {TAG} compared" in out and f"({other} left out" in out
    assert run_cli(["compare", "--dataset", other], monkeypatch, capsys)[0] == 0


def test_page_opens_on_the_model_of_the_sweep_it_was_sent_from(tmp_path, monkeypatch):
    sweep(tmp_path, {"1:1:1": (0, 0), "1:4:1": (40, 0)})
    write_adapter(tmp_path, "other-model", base_model="qwen2-vl-2b", accs=pattern(300))
    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(tmp_path))
    at = AppTest.from_file(PAGE, default_timeout=PATIENCE)
    at.session_state["compare_focus"] = {"model": "qwen2-vl-2b"}  # the jobs page's "Open in Compare"
    at.run()
    assert not at.exception and at.selectbox(key="cmp_model").value == "qwen2-vl-2b"
    assert "compare_focus" not in at.session_state  # used once: the user's later choice stands


def test_a_halving_store_is_compared_on_its_finished_runs_not_its_early_rung(tmp_path):
    # rung 1 of a search: 3 ratios x 2 seeds snapshotted at step 75 of a 300-step schedule; the final rung: 2 x 2
    for ratio in ((1, 1, 1), (1, 4, 1), (4, 1, 1)):
        for s in (0, 1):
            folder = write_adapter(tmp_path, f"r{ratio}-s{s}-step75", ratio=ratio, seed=s, accs=pattern(200 + s),
                                   training={"max_steps": 75})
            doc = json.loads((folder / "cmba.json").read_text())
            doc["result"].update(steps=75, schedule_steps=300)
            (folder / "cmba.json").write_text(json.dumps(doc))
    for ratio in ((1, 1, 1), (1, 4, 1)):
        for s in (0, 1):
            write_adapter(tmp_path, f"r{ratio}-s{s}", ratio=ratio, seed=s, accs=pattern(300 + s),
                          training={"max_steps": 300})
    a = compare.analyze(compare.scan(tmp_path).rows, n_boot=200)
    assert sorted(r["name"] for r in a.rows) == sorted(f"r{r}-s{s}" for r in ((1, 1, 1), (1, 4, 1)) for s in (0, 1))
    (apart,) = a.kept_apart
    assert len(apart["adapters"]) == 6 and apart["snapshots"]  # the snapshots stay reachable with --settings
    assert not a.kept_apart[0]["snapshots"] or all(n.endswith("-step75") for n in apart["adapters"])
    early = compare.analyze(compare.scan(tmp_path).rows, settings=apart["fingerprint"], n_boot=200)
    assert len(early.rows) == 6
