"""Altair charts of a comparison (toolkit.evaluation.compare): accuracy by ratio, accuracy vs trainable
parameters with the Pareto front, training loss curves, accuracy per answer type.

    >>> a = compare.analyze(compare.scan().rows)
    >>> accuracy_chart(a), pareto_chart(a.rows), loss_chart(compare.loss_curves(a.rows)), answer_type_chart(a)
    >>> loss_band_chart(compare.loss_curves(a.rows))   # mean per ratio, band over seeds (seeds=True: each one)

Each returns an Altair chart (the page renders it with `st.altair_chart`); the data travel inside the chart.
The base model's reference accuracy, when the analysis has one, is drawn as a dashed rule.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from toolkit import runs
from toolkit.errors import InputError
from toolkit.evaluation.compare import Analysis, pareto_front

PAD = 14
"""pixels between the outermost points and the plot's edges"""


def _scale(values) -> alt.Scale:
    """Not from zero, padded; at least 2 units wide, so one value (one adapter) gets readable ticks."""
    values = [float(v) for v in values if v is not None and v == v]
    if values and max(values) - min(values) < 2:
        mid = (max(values) + min(values)) / 2
        return alt.Scale(domain=[mid - 1, mid + 1], nice=False)
    return alt.Scale(zero=False, padding=PAD, nice=True)


ACCURACY_AXIS = alt.Axis(format=".1f")
STEP_AXIS = alt.Axis(format="d", tickMinStep=1)
RATIO_COLORS = alt.Scale(scheme="category10")
"""one hue per ratio in every chart (Streamlit's theme starts its palette with two blues: 1:1:1 and the one other
ratio of a confirmation were told apart by shade alone)"""
"""optimizer steps are whole numbers: no fractional ticks on a short run"""


def accuracy_chart(a: Analysis) -> alt.LayerChart:
    """Accuracy by ratio: each seed as a dot, the mean as a tick, the 95% CI as an error bar; the base model
    without adapter as a dashed rule."""
    order = [g.ratio for g in a.groups]
    seeds = pd.DataFrame([{"ratio": r["ratio"], "accuracy": r["accuracy"], "adapter": r["name"], "seed": str(r["seed"])}
                          for r in a.rows])
    means = pd.DataFrame([{"ratio": g.ratio, "mean": g.mean, "ci_low": g.ci_low, "ci_high": g.ci_high,
                           "seeds": len(g.seeds)} for g in a.groups])
    x = alt.X("ratio:N", sort=order, title="ratio v:p:l", axis=alt.Axis(labelAngle=0))
    dots = alt.Chart(seeds).mark_circle(size=60, opacity=0.5).encode(
        x=x, y=alt.Y("accuracy:Q", title="VQA accuracy (%)", axis=ACCURACY_AXIS,
                     scale=_scale([*seeds["accuracy"], *means["ci_low"], *means["ci_high"], a.base_reference])),
        tooltip=["adapter", "seed", "accuracy"])
    ticks = alt.Chart(means).mark_tick(thickness=3, size=24, color="black").encode(
        x=x, y="mean:Q", tooltip=["ratio", "mean", "ci_low", "ci_high", "seeds"])
    bars = alt.Chart(means.dropna()).mark_rule(strokeWidth=2, color="black").encode(x=x, y="ci_low:Q", y2="ci_high:Q")
    layers = [dots, bars, ticks]
    if a.base_reference is not None:
        base = pd.DataFrame([{"accuracy": a.base_reference, "what": "base model, no adapter"}])
        layers.append(alt.Chart(base).mark_rule(color="gray", strokeDash=[6, 4]).encode(
            y="accuracy:Q", tooltip=["what", "accuracy"]))
    return alt.layer(*layers)
def pareto_chart(rows: list[dict]) -> alt.LayerChart:
    """Accuracy vs trainable parameters, the Pareto front (fewer params, higher accuracy) as a line."""
    front = set(pareto_front(rows))
    df = pd.DataFrame([{"adapter": r["name"], "ratio": r["ratio"], "trainable_params": r["trainable_params"],
                        "accuracy": r["accuracy"], "pareto": r["name"] in front} for r in rows])
    base = alt.Chart(df).encode(x=alt.X("trainable_params:Q", title="trainable parameters", axis=alt.Axis(format=",~s"),
                                        scale=alt.Scale(zero=False, padding=PAD)),
                                y=alt.Y("accuracy:Q", title="VQA accuracy (%)", axis=ACCURACY_AXIS,
                                        scale=_scale(df["accuracy"])))
    points = base.mark_circle(size=70).encode(color=alt.Color("ratio:N", scale=RATIO_COLORS), tooltip=[
        "adapter", "ratio", alt.Tooltip("trainable_params:Q", format=","), "accuracy", "pareto"])
    line = alt.Chart(df[df["pareto"]].sort_values("trainable_params")).mark_line(
        color="gray", strokeDash=[4, 3], interpolate="step-after").encode(x="trainable_params:Q", y="accuracy:Q")
    return alt.layer(line, points)


def loss_chart(curves: pd.DataFrame) -> alt.Chart:
    """Training loss of the compared runs overlaid (`curves` from `loss_curves`), one colour per ratio."""
    return alt.Chart(curves).mark_line().encode(
        x=alt.X("step:Q", axis=STEP_AXIS), y=alt.Y("loss:Q", scale=alt.Scale(zero=False)), color=alt.Color("ratio:N", scale=RATIO_COLORS), detail="adapter:N",
        tooltip=["adapter", "seed", "step", "loss"])


def loss_band_chart(curves: pd.DataFrame, *, seeds: bool = False) -> alt.LayerChart:
    """Training loss per ratio, read at a glance: the mean over seeds as one line per ratio, with a band from the
    lowest to the highest seed at each step; `seeds` also draws every seed's own curve, faint. `curves` has
    columns ratio, seed, step, loss (compare.loss_curves, study.progress.loss_curves)."""
    df = curves.dropna(subset=["loss"]).assign(ratio=lambda d: d["ratio"].astype(str))
    band = (df.groupby(["ratio", "step"])["loss"].agg(["mean", "min", "max", "count"]).reset_index()
            .rename(columns={"count": "seeds"}))
    x = alt.X("step:Q", title="step", axis=STEP_AXIS)
    # one legend for both layers, drawn as solid lines (the band's opacity made its swatches faint; a legend
    # turned off on one layer turned it off for the whole chart)
    color = alt.Color("ratio:N", title="ratio v:p:l", scale=RATIO_COLORS,
                      legend=alt.Legend(orient="bottom", symbolType="stroke", symbolOpacity=1, symbolStrokeWidth=3))
    area = alt.Chart(band).mark_area(opacity=0.2).encode(
        x=x, y=alt.Y("min:Q", title="training loss", scale=alt.Scale(zero=False)), y2="max:Q", color=color)
    mean = alt.Chart(band).mark_line(strokeWidth=2).encode(
        x=x, y="mean:Q", color=color,
        tooltip=["ratio", "step", "seeds", alt.Tooltip("mean:Q", format=".4f", title="mean loss"),
                 alt.Tooltip("min:Q", format=".4f"), alt.Tooltip("max:Q", format=".4f")])
    layers = [area, mean]
    if seeds:
        layers.append(alt.Chart(df.assign(seed=df["seed"].astype(str))).mark_line(strokeWidth=0.8, opacity=0.5)
                      .encode(x=x, y="loss:Q", color=color, detail="seed:N", tooltip=["ratio", "seed", "step", "loss"]))
    return alt.layer(*layers)


def answer_type_counts(a: Analysis) -> dict[str, int]:
    """{answer type: questions} of the compared eval set, from one adapter's predictions ({} without them)."""
    for row in a.rows:
        try:
            predictions = runs.read_predictions(row["path"], row["eval_tag"])
        except InputError:
            continue
        if predictions:
            counts: dict[str, int] = {}
            for p in predictions:
                key = p.answer_type or "unknown"
                counts[key] = counts.get(key, 0) + 1
            return counts
    return {}


def answer_type_chart(a: Analysis, counts: dict[str, int] | None = None) -> alt.Chart:
    """Mean accuracy per answer type, one bar per ratio inside each answer type; each type labelled with its
    number of questions (`counts`, default `answer_type_counts(a)`)."""
    counts = answer_type_counts(a) if counts is None else counts

    def label(t: str) -> str:
        return f"{t} (n={counts[t]:,})" if t in counts else t

    df = pd.DataFrame([{"ratio": g.ratio, "answer type": label(t), "accuracy": v}
                       for g in a.groups for t, v in g.per_answer_type.items()],
                      columns=["ratio", "answer type", "accuracy"])
    return alt.Chart(df).mark_bar().encode(
        x=alt.X("answer type:N", axis=alt.Axis(labelAngle=0)), xOffset=alt.XOffset("ratio:N", sort=[g.ratio for g in a.groups]),
        y=alt.Y("accuracy:Q", title="VQA accuracy (%)"), color=alt.Color("ratio:N", scale=RATIO_COLORS),
        tooltip=["ratio", "answer type", "accuracy"])


def _ternary_xy(df: pd.DataFrame) -> pd.DataFrame:
    """Barycentric (vision, projector, language) -> plane: vision bottom-left, language bottom-right, projector top."""
    total = df["vision"] + df["projector"] + df["language"]
    return df.assign(x=(df["language"] + df["projector"] / 2) / total, y=df["projector"] * (3 ** 0.5 / 2) / total)


def _cells(df: pd.DataFrame) -> pd.DataFrame:
    """Each grid point of the fitted surface as a rectangle that tiles its row of the triangular lattice, clipped
    to the triangle (x1, x2, y1, y2): no cell spills past the edges, and the edges' steps are half a cell."""
    if df.empty:
        return df.assign(x1=[], x2=[], y1=[], y2=[])
    positive = df["vision"][df["vision"] > 1e-9]
    n = max(1, round(1 / float(positive.min()))) if len(positive) else 1  # simplex_grid(n): proportions i/n
    h, v, top = 1 / n, 3 ** 0.5 / 2 / n, 3 ** 0.5 / 2
    out = df.assign(x1=(df["x"] - h / 2).clip(lower=df["y"] / 3 ** 0.5),
                    x2=(df["x"] + h / 2).clip(upper=1 - df["y"] / 3 ** 0.5),
                    y1=(df["y"] - v / 2).clip(lower=0), y2=(df["y"] + v / 2).clip(upper=top))
    return out[out["x2"] > out["x1"]]  # the apex's cell has no width inside the triangle at its height


def _sparse(region, per_side: int = 12) -> list:
    """A large region's points that lie on a coarser lattice (`per_side` steps a side); a small one whole. Drawn at
    every point of the surface's 60-step grid, crosses covered the colours wherever the region is large (most of
    the triangle after a short study)."""
    from toolkit.evaluation.surface import GRID

    if len(region) <= (per_side + 1) * (per_side + 2) // 2:  # no more than the coarse lattice has: all shown
        return list(region)
    step = max(1, GRID // per_side)
    return [r for r in region if all(abs(v * GRID / step - round(v * GRID / step)) < 1e-6 for v in r)]


def ternary_chart(rec) -> alt.LayerChart:
    """Accuracy over the vision : projector : language simplex (a toolkit.evaluation.surface.Recommendation):
    the fitted surface as coloured cells (when the design supports one), the observed arms (mean over seeds, per
    rung) as circles, the region whose gain the band cannot tell from the optimum's as small crosses and the
    recommended ratio as a triangle (none when no ratio beats 1:1:1)."""
    axis = dict(axis=None, scale=alt.Scale(domain=[-0.08, 1.08]))
    surface = _cells(_ternary_xy(pd.DataFrame(rec.surface, columns=["vision", "projector", "language", "accuracy"])))
    # beyond the range each proportion was trained over the fit extrapolates, and the optimum is never sought there
    # (surface.region_grid): those cells are faded, so a bright corner no run came near does not read as the answer
    seen = pd.DataFrame(rec.observed)
    inside = pd.Series(True, index=surface.index)
    for name in ("vision", "projector", "language"):
        if name in seen and len(seen):
            inside &= surface[name].between(seen[name].min() - 1e-9, seen[name].max() + 1e-9)
    surface = surface.assign(fit=inside.map({True: "within the trained range", False: "extrapolated"}))
    cells = alt.Chart(surface).mark_rect().encode(
        x=alt.X("x1:Q", **axis), x2="x2:Q", y=alt.Y("y1:Q", **axis), y2="y2:Q",
        color=alt.Color("accuracy:Q", title="fitted accuracy (%)", scale=alt.Scale(scheme="viridis")),
        opacity=alt.condition(alt.datum.fit == "extrapolated", alt.value(0.3), alt.value(0.85)),
        tooltip=["vision", "projector", "language", alt.Tooltip("accuracy:Q", format=".2f"), "fit"])
    edge = pd.DataFrame([{"vision": 1, "projector": 0, "language": 0, "o": 0}, {"vision": 0, "projector": 0, "language": 1, "o": 1},
                         {"vision": 0, "projector": 1, "language": 0, "o": 2}, {"vision": 1, "projector": 0, "language": 0, "o": 3}])
    outline = alt.Chart(_ternary_xy(edge)).mark_line(color="black").encode(x="x:Q", y="y:Q", order="o:Q")
    labels = _ternary_xy(edge.iloc[:3].assign(name=["vision", "language", "projector"]))
    corner = alt.Chart(labels.assign(y=labels["y"] + [-0.04, -0.04, 0.04])).mark_text(fontWeight="bold").encode(
        x="x:Q", y="y:Q", text="name:N")
    observed = alt.Chart(_ternary_xy(pd.DataFrame(rec.observed))).mark_circle(size=120, stroke="white", strokeWidth=1.5).encode(
        x="x:Q", y="y:Q", color=alt.Color("accuracy:Q", scale=alt.Scale(scheme="viridis")),
        tooltip=["ratio", "block", "seeds", alt.Tooltip("accuracy:Q", format=".2f")])
    names = ("vision", "projector", "language")
    region = alt.Chart(_ternary_xy(pd.DataFrame([dict(zip(names, r)) for r in _sparse(rec.region)],
                                                columns=list(names)))).mark_point(
        shape="cross", size=40, color="red", opacity=0.6).encode(x="x:Q", y="y:Q")
    best = pd.DataFrame([{**dict(zip(names, (float(w) for w in rec.ratio.split(":")))), "recommended": rec.ratio,
                          "gain": rec.gain}] if rec.ratio else [], columns=[*names, "recommended", "gain"])
    star = alt.Chart(_ternary_xy(best)).mark_point(shape="triangle-up", size=300, color="red", filled=True).encode(
        x="x:Q", y="y:Q", tooltip=["recommended", alt.Tooltip("gain:Q", format="+.2f")])
    return alt.layer(cells, outline, corner, region, observed, star).properties(width=420, height=380)
