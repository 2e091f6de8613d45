"""The response surface (toolkit.evaluation.surface) and the study's recommendation on it
(toolkit.evaluation.recommendation): a planted optimum is recovered from simulated accuracies, rounding gives simple
ratios, rungs share the shape with their own scale, the adjusted interval covers the planted gain, a flat surface
recommends nothing, and compare --json / the ternary chart carry the recommendation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.helpers.adapters import designed_store
from toolkit.evaluation.charts import ternary_chart
from toolkit.evaluation.recommendation import recommend_points
from toolkit.evaluation.surface import (
    UNIFORM,
    Point,
    fit_surface,
    points_from_rows,
    simple_ratio,
)
from toolkit.study.design import Design

PLANTED = np.array([2, 4, 1]) / 7


def truth(x) -> float:
    return 70.0 - 60.0 * float(np.sum((np.asarray(x) - PLANTED) ** 2))


def simulate(design="simplex-lattice:3", seeds=3, noise=0.5, rng_seed=1, block=300, offset=0.0, questions=0):
    rng = np.random.default_rng(rng_seed)
    points = []
    for r in Design.parse(design).ratios() + ("1:2:1", "1:3:1", "2:2:1"):
        w = np.array([float(v) for v in r.split(":")])
        x = tuple(w / w.sum())
        for s in range(seeds):
            acc = truth(x) + offset + rng.normal(0, noise)
            qs = None
            if questions:  # per-question 0/1 scores whose mean is acc
                qs = {str(q): float(rng.random() < acc / 100) for q in range(questions)}
                acc = 100 * float(np.mean(list(qs.values())))
            points.append(Point(x, acc, s, block, qs))
    return points


@pytest.mark.parametrize("x, expected", [((0.286, 0.571, 0.143), (2, 4, 1)), (UNIFORM, (1, 1, 1)),
                                         ((0.1, 0.8, 0.1), (1, 7, 1)), ((0.5, 0.5, 0.0), (1, 1, 0)),
                                         ((0.19, 0.62, 0.19), (1, 3, 1))])
def test_simple_ratio(x, expected):
    assert simple_ratio(x) == expected  # the smallest whole numbers within 0.05 of x (1:7:1 for 0.1:0.8:0.1)
    assert simple_ratio((0.1, 0.8, 0.1), tolerance=0) == (1, 8, 1)


def test_surface_recovers_a_planted_optimum():
    rec = recommend_points(simulate(), n_boot=1000)
    assert rec.ratio == "2:4:1" and rec.method == "surface" and rec.outcome == "candidate"  # fitted, never trained
    assert np.linalg.norm(np.array(rec.optimum) - PLANTED) < 0.05
    planted_gain = truth(PLANTED) - truth(UNIFORM)
    assert rec.gain_ci[0] <= planted_gain <= rec.gain_ci[1]
    assert abs(rec.gain - planted_gain) < 0.6
    lo, hi = rec.proportion_ci["projector"]
    assert lo <= PLANTED[1] <= hi
    assert rec.model.startswith("Scheffé quadratic") and rec.r2 > 0.95 and rec.lack_of_fit_p > 0.01
    assert rec.measured_gain is None and rec.gain_source == "fitted"  # 2:4:1 is not a simulated arm
    assert rec.confirm and "no run trained" in rec.confirm_reason and "screening value" in rec.reason
    # the interval is adjusted for the choice: wider than the chosen point's own 95% interval
    assert rec.critical > 2.0


def test_rungs_share_the_shape_with_their_own_scale():
    # the first rung's differences are twice the last's and 15 points lower; the last rung has 4 < 7 ratios
    first = [Point(p.proportions, 2 * (p.accuracy - 70.0) + 55.0, p.seed, 100) for p in simulate(rng_seed=2)]
    survivors = {(0.25, 0.5, 0.25), (0.2, 0.6, 0.2), (0.4, 0.4, 0.2), (1 / 3, 1 / 3, 1 / 3)}
    last = [p for p in simulate(block=300, rng_seed=3) if tuple(round(x, 6) for x in p.proportions)
            in {tuple(round(x, 6) for x in s) for s in survivors}]
    rec = recommend_points(first + last, n_boot=1000)
    assert rec.method == "surface" and rec.blocks == [100, 300] and "shared by 2 rungs" in rec.model
    planted_gain = truth(PLANTED) - truth(UNIFORM)
    assert rec.ratio == "2:4:1" and rec.gain_ci[0] <= planted_gain <= rec.gain_ci[1]  # the last rung's scale
    assert abs(rec.gain - planted_gain) < 1.0  # additive pooling reported about twice the gain here


def test_question_level_widens_with_fewer_questions():
    wide = recommend_points(simulate(seeds=2, noise=0.0, questions=100), n_boot=1000)
    narrow = recommend_points(simulate(seeds=2, noise=0.0, questions=3000), n_boot=1000)
    assert (wide.gain_ci[1] - wide.gain_ci[0]) > (narrow.gain_ci[1] - narrow.gain_ci[0])


def test_flat_surface_recommends_nothing_it_cannot_show():
    points = [Point(p.proportions, 60.0 + np.random.default_rng(i).normal(0, 2.0), p.seed, p.block)
              for i, p in enumerate(simulate())]
    rec = recommend_points(points, n_boot=1000)
    assert rec.outcome in ("candidate", "none") and rec.gain_ci[0] <= 0.0
    if rec.outcome == "none":
        assert rec.ratio is None and not rec.confirm and "within ±" in rec.reason


def test_a_plain_sweep_gets_no_surface_and_never_a_loser():
    # 4 ratios: too few for a surface; the best measured arm is below 1:1:1, so nothing is recommended
    accs = {(1, 1, 1): 50.0, (1, 4, 1): 49.0, (4, 1, 1): 45.0, (1, 1, 4): 48.5}
    points = [Point(tuple(np.array(r) / sum(r)), a + d, s) for r, a in accs.items() for s, d in enumerate((-0.3, 0.3))]
    rec = recommend_points(points, n_boot=1000)
    assert rec.method == "arms" and not rec.surface and rec.optimum is None
    assert rec.outcome == "none" and rec.ratio is None and rec.best is None and not rec.confirm
    assert "not above 1:1:1" in rec.reason and "too few for a response surface" in rec.reason


def test_too_few_ratios_is_an_error():
    with pytest.raises(ValueError, match="at least 3 distinct ratios"):
        fit_surface([Point((1, 0, 0), 50.0), Point((0, 1, 0), 60.0)])
    with pytest.raises(ValueError, match="at least 3 distinct ratios"):
        recommend_points([Point((1, 0, 0), 50.0), Point(UNIFORM, 60.0)])
    pts = [Point(x, truth(x)) for x in ((1, 0, 0), (0, 1, 0), (0, 0, 1), UNIFORM)]
    assert not fit_surface(pts).quadratic


def test_points_from_rows_pools_rungs_and_keeps_other_settings_apart():
    def row(ratio, steps, lr="5e-3", acc=50.0, tag="t"):
        return {"kind": "adapter", "ratio_values": ratio, "accuracy": acc, "seed": 0, "eval_tag": tag,
                "settings": {"training.max_steps": steps, "training.learning_rate": lr}}
    rows = [row([1, 1, 1], 100), row([1, 4, 1], 100), row([2, 1, 0], 300), row([1, 1, 1], 300),
            row([1, 1, 1], 100, lr="1e-3"), row([1, 2, 1], 100, tag="other")]
    points, info = points_from_rows(rows)
    assert len(points) == 4 and {p.block for p in points} == {100, 300} and info["eval_tag"] == "t"


def test_ternary_chart_layers_the_surface_arms_region_and_star():
    rec = recommend_points(simulate(), n_boot=200)
    spec = ternary_chart(rec).to_dict()
    assert len(spec["layer"]) == 6
    marks = [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in spec["layer"]]
    assert marks == ["rect", "line", "text", "point", "circle", "point"]
    # the surface's cells stay inside the triangle and tile each row (no gaps between neighbours)
    cells = pd.DataFrame(spec["datasets"][spec["layer"][0]["data"]["name"]])
    assert (cells["x1"] >= cells["y1"] / 3 ** 0.5 - 1e-9).all() and (cells["x2"] <= 1 + 1e-9).all()
    assert (cells["y1"] >= 0).all() and (cells["y2"] <= 3 ** 0.5 / 2 + 1e-9).all() and (cells["x2"] > cells["x1"]).all()
    row = cells[cells["y1"] == 0].sort_values("x1")
    assert len(row) == 21 and (row["x1"].to_numpy()[1:] - row["x2"].to_numpy()[:-1]).max() < 1e-9
    # cells beyond the range each share was trained over are marked (and drawn faded)
    seen = pd.DataFrame(rec.observed)
    beyond = ~(cells["projector"].between(seen["projector"].min() - 1e-9, seen["projector"].max() + 1e-9)
               & cells["vision"].between(seen["vision"].min() - 1e-9, seen["vision"].max() + 1e-9)
               & cells["language"].between(seen["language"].min() - 1e-9, seen["language"].max() + 1e-9))
    assert list(cells["fit"] == "extrapolated") == list(beyond)
    # the region's crosses: its own points, on a 12-step lattice only (every point of the 60-step grid hid the
    # colours where the region is large), none outside it
    crosses = pd.DataFrame(spec["datasets"][spec["layer"][3]["data"]["name"]])
    region = {tuple(round(v, 9) for v in r) for r in rec.region}
    assert 0 < len(crosses) <= 91 and (len(crosses) < len(region) if len(region) > 91 else len(crosses) == len(region))
    from toolkit.evaluation.charts import _sparse
    from toolkit.evaluation.surface import simplex_grid

    whole = [tuple(x) for x in simplex_grid(60)]  # the whole triangle: 1,891 points -> the 91 of a 12-step lattice
    assert len(_sparse(whole)) == 91 and set(_sparse(whole)) <= set(whole)
    assert {tuple(round(v, 9) for v in r) for r in crosses[["vision", "projector", "language"]].to_numpy()} <= region


def test_compare_json_carries_the_recommendation_of_a_designed_store(tmp_path, capsys):
    from toolkit import cli

    designed_store(tmp_path)
    assert cli.main(["compare", "--adapters-dir", str(tmp_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr()[0])
    rec = doc["recommendation"]
    assert rec["ratio"] == "1:2:1" and rec["n_ratios"] == 10 and rec["n_runs"] == 20 and rec["method"] == "surface"
    assert rec["gain"] > 0 and len(rec["surface"]) == 231 and rec["observed"] and rec["outcome"] in ("use", "candidate")
    assert rec["final"] == rec["headline"] and rec["confirmation"] is None  # no confirmation ran
    assert cli.main(["compare", "--adapters-dir", str(tmp_path)]) == 0
    out = capsys.readouterr()[0]
    assert f"recommendation: {rec['headline']}" in out and "1:2:1" in out


def test_compare_page_shows_the_recommendation_and_its_ternary_plot(tmp_path, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    designed_store(tmp_path / "adapters")
    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(tmp_path / "adapters"))
    monkeypatch.setenv("CMBA_JOBS_DIR", str(tmp_path / "jobs"))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app_pages" / "compare.py"), default_timeout=600)
    at.run()
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    assert metrics.get("Recommended ratio", metrics.get("Candidate ratio")) == "1:2:1"
    assert any("1:2:1" in b.value for b in [*at.success, *at.info])  # the outcome with its reason
    assert any("adjusted for choosing it" in c.value for c in at.caption)


def test_where_both_arms_ran_the_gain_is_measured_not_modelled():
    # accuracies peaking at 1:2:1, an arm of the study, as is 1:1:1
    best = np.array([1, 2, 1]) / 4
    rng = np.random.default_rng(7)
    points = []
    for r in Design.parse("simplex-lattice:3").ratios() + ("1:2:1", "2:2:1", "1:2:2"):
        w = np.array([float(v) for v in r.split(":")])
        x = tuple(w / w.sum())
        for s in range(3):
            acc = 70.0 - 60.0 * float(np.sum((np.array(x) - best) ** 2))
            points.append(Point(x, acc + rng.normal(0, 0.3), s, 300))
    rec = recommend_points(points, n_boot=500)
    assert rec.ratio == "1:2:1" and rec.gain_source == "measured" and rec.lack_of_fit < 1.0  # 1:2:1 was trained
    mine = [p.accuracy for p in points if np.allclose(p.proportions, best)]
    uni = [p.accuracy for p in points if np.allclose(p.proportions, UNIFORM)]
    assert rec.gain == rec.measured_gain == pytest.approx(np.mean(mine) - np.mean(uni))  # the fitted one beside it
    assert rec.fitted_gain is not None and abs(rec.fitted_gain - rec.gain) < 1.0
    assert rec.gain_ci[0] <= rec.gain <= rec.gain_ci[1]
    assert recommend_points(simulate(), n_boot=200).measured_gain is None  # 2:4:1 was never trained
    # a cliff on the language-free edge, which a quadratic cannot follow: lack of fit, so the best measured arm
    cliff = [Point(p.proportions, 20.0 if p.proportions[2] == 0 else p.accuracy, p.seed, p.block) for p in points]
    rec = recommend_points(cliff, n_boot=200)
    assert rec.method == "arms" and "does not fit" in rec.reason and rec.gain_source == "measured"
