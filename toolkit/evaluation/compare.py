"""Compare evaluated adapters: the study's statistics, its verdict, the best adapter, tables and charts.

    >>> store = scan()                                 # the adapter store (adapters_dir() or a given folder)
    >>> a = analyze(store.rows, baseline="1:1:1")      # refuses mixed base models / eval sets / budgets
    >>> a.verdict.label, a.verdict.reason              # "positive" | "weak positive" | "negative" | "undetermined"
    >>> table(a.rows), group_table(a), comparison_table(a)
    >>> accuracy_chart(a), pareto_chart(a.rows), loss_chart(loss_curves(a.rows)), answer_type_chart(a)
    >>> to_json(a), to_csv(a.rows, "adapters.csv")

Statistics: runs of one ratio (its seeds) give mean ± 95% CI with Student's t (no CI from a single seed);
each ratio is compared with the baseline ratio by a paired bootstrap over questions (per question, the
accuracy averaged over the ratio's seeds minus the baseline's; questions resampled with replacement,
fixed seed): Δ in points, its 95% percentile interval and a two-sided p-value. The verdict: "positive" when
the best other ratio beats the baseline by more than 1 point with p < 0.05, "weak positive" when it beats it
without both (a trend), "negative" when nothing beats it or uniform allocation is best. Pure: no Streamlit.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd

from toolkit import runs
from toolkit.calculator.spec import Ratio
from toolkit.errors import InputError
from toolkit.evaluation.scoring import question_accuracy
from toolkit.evaluation.stats import BOOT_SEED, N_BOOT, betainc, mean_ci, paired_bootstrap, t_cdf, t_quantile  # noqa: F401
from toolkit.paths import adapters_dir

MIN_EFFECT = 1.0
"""points of accuracy the best ratio must gain over the baseline for a positive verdict"""
ALPHA = 0.05
"""significance level of the paired bootstrap"""


def pareto_front(rows: list[dict]) -> list[str]:
    """Names of the rows no other row beats on both accuracy (higher) and trainable params (fewer)."""
    front = []
    for r in rows:
        dominated = any(s["trainable_params"] <= r["trainable_params"] and s["accuracy"] >= r["accuracy"]
                        and (s["trainable_params"] < r["trainable_params"] or s["accuracy"] > r["accuracy"])
                        for s in rows)
        if not dominated:
            front.append(r["name"])
    return front


# ------------------------------------------------------------------------------------------ the store


@dataclass
class Store:
    """What `scan` found: one row per (adapter, evaluation) and every folder it could not use."""

    folder: str
    rows: list[dict] = field(default_factory=list)
    no_cmba: list[str] = field(default_factory=list)
    """folders without cmba.json: still training, failed, or not adapters"""
    not_evaluated: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    """'name: reason' for a cmba.json or results.json that is not valid"""

    def summary(self) -> str:
        parts = [f"{len(self.rows)} evaluations in {self.folder}"]
        for names, what in ((self.no_cmba, "without cmba.json"), (self.not_evaluated, "not evaluated"),
                            (self.unreadable, "unreadable")):
            if names:
                parts.append(f"{len(names)} {what} ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
        return " · ".join(parts)


def ratio_label(ratio, mode: str = "rank") -> str:
    text = ":".join(f"{float(w):g}" for w in ratio)
    return text if mode == "rank" else f"{text} ({mode})"


def _ratio_key(ratio, mode: str = "rank") -> tuple:
    """2:8:2 and 1:4:1 are one ratio: scale so the smallest non-zero weight is 1."""
    low = min(float(w) for w in ratio if float(w) > 0)
    return (mode, *(round(float(w) / low, 6) for w in ratio))


def _row(folder: Path, cmba: dict, tag: str, results: dict) -> dict:
    base = cmba.get("base_model") or {}
    alloc = cmba.get("allocation") or {}
    training, result, data = cmba.get("training") or {}, cmba.get("result") or {}, results.get("dataset") or {}
    scores = results["scores"]
    kind = cmba.get("kind", "adapter")
    if kind != "base" and not alloc.get("ratio"):
        raise ValueError("an adapter's cmba.json needs allocation.ratio")
    comps = alloc.get("components") or {}
    return {
        "name": cmba.get("name") or folder.name, "kind": kind, "path": str(folder), "eval_tag": tag,
        "base_model": base.get("hub_id") or base.get("id") or results.get("base_model"),
        "base_model_id": base.get("id") or results.get("base_model"),
        "dataset": data.get("id"), "split": data.get("split"), "n": scores.get("n", data.get("n")),
        "budget": alloc.get("budget"), "budget_spec": alloc.get("budget_spec"), "mode": alloc.get("mode"),
        "ratio": ratio_label(alloc["ratio"], alloc.get("mode", "rank")) if alloc.get("ratio") else kind,
        "ratio_values": list(alloc["ratio"]) if alloc.get("ratio") else None,
        "ranks": ":".join(str(comps[c]["rank"]) for c in ("vision", "projector", "language")) if comps else "",
        "trainable_params": int(alloc.get("total") or 0), "seed": training.get("seed"),
        "accuracy": float(scores["overall"]), "per_answer_type": dict(scores.get("per_answer_type") or {}),
        "train_time_s": result.get("train_time_s"), "peak_memory_bytes": result.get("peak_memory_bytes"),
        "eval_time_s": results.get("eval_time_s"), "created": results.get("created"),
    }


def scan(folder=None) -> Store:
    """Rows of every evaluated adapter (and base-model reference) in the store; nothing dropped silently."""
    root = Path(folder) if folder is not None else adapters_dir()
    store = Store(folder=str(root))
    for sub in runs.run_folders(root):
        if not runs.is_complete(sub):
            store.no_cmba.append(sub.name)
            continue
        try:
            cmba = runs.read_adapter_doc(sub).to_dict()
        except InputError as exc:
            store.unreadable.append(f"{sub.name}: {runs.ADAPTER_DOC} ({exc})")
            continue
        tags = runs.evaluations(sub)
        if not tags:
            store.not_evaluated.append(sub.name)
        for tag in tags:
            try:
                store.rows.append(_row(sub, cmba, tag, runs.read_evaluation(sub, tag).to_dict()))
            except (ValueError, KeyError, TypeError) as exc:  # InputError is a ValueError
                store.unreadable.append(f"{sub.name}/{runs.EVAL}/{tag}: {runs.RESULTS} ({type(exc).__name__}: {exc})")
    return store


def choices(rows: list[dict], key: str) -> list:
    """Distinct values of `key` among adapter rows, the most frequent first (filter options and defaults)."""
    counts = Counter(r[key] for r in rows if r["kind"] != "base")
    return [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))]


def _budget_text(value) -> str:
    """"100,000", "100_000", "1e5" and 100000 all read as "100000"; anything else is a budget spec."""
    text = str(value).strip()
    try:
        number = float(text.replace(",", "").replace("_", ""))
    except ValueError:
        return text
    return str(int(number)) if math.isfinite(number) and number == int(number) else text


def filter_rows(rows: list[dict], *, model=None, dataset=None, budget=None) -> list[dict]:
    """Rows of one base model (hub id or id as given), eval set (tag or dataset id) and budget (params or spec)."""
    out = rows
    for value, name, match in (
        (model, "model", lambda r, v: v in (r["base_model"], r["base_model_id"])),
        (dataset, "dataset", lambda r, v: v in (r["eval_tag"], r["dataset"])),
        (budget, "budget", lambda r, v: r["kind"] == "base" or v in (str(r["budget"]), r["budget_spec"])),
    ):
        if value is None or value == "":
            continue
        v = _budget_text(value) if name == "budget" else str(value)
        kept = [r for r in out if match(r, v)]
        if not [r for r in kept if r["kind"] != "base"]:
            have = ", ".join(str(x) for x in choices(out, {"model": "base_model", "dataset": "eval_tag",
                                                            "budget": "budget"}[name])) or "none"
            raise InputError(f"{name}: no evaluated adapter matches '{value}' (available: {have})")
        out = kept
    return out


# ------------------------------------------------------------------------------------------ analysis


@dataclass(frozen=True)
class Group:
    """The runs (seeds) of one ratio."""

    ratio: str
    adapters: list[str]
    seeds: list
    accuracies: list[float]
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None
    """None with a single seed: no interval can be estimated from one run"""
    trainable_params: float
    ranks: str
    per_answer_type: dict[str, float]


@dataclass(frozen=True)
class Comparison:
    """Paired bootstrap of one ratio against the baseline, in accuracy points."""

    ratio: str
    baseline: str
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    n_questions: int
    n_only_ratio: int
    n_only_baseline: int

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


@dataclass(frozen=True)
class Verdict:
    label: str
    """positive | weak positive | negative | undetermined"""
    reason: str
    ratio: str | None = None
    delta: float | None = None
    p_value: float | None = None


@dataclass
class Analysis:
    rows: list[dict]
    base_model: str
    eval_tag: str
    budget: int | None
    baseline: str
    groups: list[Group]
    comparisons: list[Comparison]
    verdict: Verdict
    best: dict | None
    pareto: list[str]
    base_reference: float | None
    notes: list[str]


def _per_question(row: dict) -> dict[str, float] | None:
    preds = runs.read_predictions(row["path"], row["eval_tag"])
    if preds is None:
        return None
    return {p.question_id: float(p.accuracy if p.accuracy is not None else question_accuracy(p.prediction, p.answers))
            for p in preds}


def _check_single(rows: list[dict]) -> None:
    differing = []
    for key, what in (("base_model", "base model"), ("eval_tag", "eval set"), ("budget", "budget")):
        counts = Counter(str(r[key]) for r in rows)
        if len(counts) > 1:
            differing.append(f"{what} ({', '.join(f'{v}: {n}' for v, n in counts.most_common())})")
    if differing:
        raise InputError(f"compare: the adapters differ in {' and '.join(differing)}; compare one at a time "
                         "with --model / --dataset / --budget")


def _group_mean_per_question(group_rows: list[dict], notes: list[str]) -> dict[str, float] | None:
    tables = []
    for r in group_rows:
        pq = _per_question(r)
        if pq is None:
            notes.append(f"{r['name']}: no predictions.jsonl, left out of the paired test")
        else:
            tables.append(pq)
    if not tables:
        return None
    common = set(tables[0]).intersection(*tables[1:])
    if any(len(t) != len(common) for t in tables):
        notes.append(f"ratio {group_rows[0]['ratio']}: its runs share {len(common)} of their questions; "
                     "only those are averaged")
    return {q: sum(t[q] for t in tables) / len(tables) for q in common}


def _seed_order(r: dict) -> tuple:
    seed = r["seed"]
    return (not isinstance(seed, int), seed if isinstance(seed, int) else 0, str(seed), r["name"])


def _is_uniform(row: dict) -> bool:
    w = row.get("ratio_values") or []
    return len(w) == 3 and min(w) > 0 and max(w) == min(w)


def _verdict(groups: list[Group], comparisons: dict[str, Comparison], baseline: str, rows: list[dict]) -> Verdict:
    labels = [g.ratio for g in groups]
    if baseline not in labels:
        return Verdict("undetermined", f"no evaluated adapter has the baseline ratio {baseline} "
                       f"(ratios here: {', '.join(labels)})")
    others = [g for g in groups if g.ratio != baseline]
    if not others:
        return Verdict("undetermined", f"only the baseline ratio {baseline} was evaluated: nothing to compare")
    best = others[0]  # groups are sorted best first
    c = comparisons.get(best.ratio)
    if c is None:
        return Verdict("undetermined", f"no per-question predictions to pair {best.ratio} with {baseline}")
    stats = (f"{c.delta:+.2f} points (95% CI {c.ci_low:+.2f} to {c.ci_high:+.2f}, p = {c.p_value:.4f}, "
             f"{c.n_questions} questions, {len(best.seeds)} vs {len(groups[labels.index(baseline)].seeds)} seeds)")
    top = groups[0]
    uniform_top = _is_uniform(next(r for r in rows if r["ratio"] == top.ratio))
    if c.delta <= 0 or top.ratio == baseline:
        return Verdict("negative", f"no ratio beats the baseline {baseline}: the best other ratio, {best.ratio}, "
                       f"is {stats}", best.ratio, c.delta, c.p_value)
    if uniform_top:
        return Verdict("negative", f"uniform allocation {top.ratio} is best ({top.mean:.2f}%); {best.ratio} vs "
                       f"{baseline}: {stats}", best.ratio, c.delta, c.p_value)
    if c.delta > MIN_EFFECT and c.significant:
        return Verdict("positive", f"{best.ratio} beats the baseline {baseline} by {stats}",
                       best.ratio, c.delta, c.p_value)
    missing = [m for m, ok in ((f"the gain is not above {MIN_EFFECT:g} point", c.delta > MIN_EFFECT),
                               (f"it is not significant at {ALPHA:g}", c.significant)) if not ok]
    return Verdict("weak positive", f"{best.ratio} beats the baseline {baseline} by {stats}, a trend only: "
                   f"{' and '.join(missing)}", best.ratio, c.delta, c.p_value)


def _groups(adapters: list[dict]) -> tuple[list[Group], dict[tuple, str]]:
    """Runs grouped by ratio, best mean first; also the label of each ratio key. Relabels rows in place."""
    by_key: dict[tuple, list[dict]] = {}
    for r in adapters:
        by_key.setdefault(_ratio_key(r["ratio_values"], r["mode"] or "rank"), []).append(r)
    groups, labels = [], {}
    for key, members in by_key.items():
        members.sort(key=_seed_order)
        labels[key] = label = members[0]["ratio"]
        for r in members:
            r["ratio"] = label  # 2:8:2 joins 1:4:1 under the label seen first
        accs = [r["accuracy"] for r in members]
        mean, sd, half = mean_ci(accs)
        types = sorted({t for r in members for t in r["per_answer_type"]})
        groups.append(Group(
            ratio=label, adapters=[r["name"] for r in members], seeds=[r["seed"] for r in members],
            accuracies=accs, mean=mean, std=sd, ci_low=None if half is None else mean - half,
            ci_high=None if half is None else mean + half,
            trainable_params=sum(r["trainable_params"] for r in members) / len(members), ranks=members[0]["ranks"],
            per_answer_type={t: float(np.mean([r["per_answer_type"][t] for r in members if t in r["per_answer_type"]]))
                             for t in types}))
    groups.sort(key=lambda g: (-g.mean, g.trainable_params, g.ratio))
    return groups, labels


def _comparisons(adapters: list[dict], groups: list[Group], baseline: str, notes: list[str], *, n_boot: int,
                 seed: int) -> dict[str, Comparison]:
    members = {g.ratio: [r for r in adapters if r["ratio"] == g.ratio] for g in groups}
    if baseline not in members:
        return {}
    base_pq = _group_mean_per_question(members[baseline], notes)
    out: dict[str, Comparison] = {}
    for g in groups:
        if g.ratio == baseline or base_pq is None:
            continue
        pq = _group_mean_per_question(members[g.ratio], notes)
        if pq is None:
            continue
        common = sorted(q for q in pq if q in base_pq)  # fixed order: the resampling is reproducible
        if not common:
            notes.append(f"ratio {g.ratio}: no question in common with the baseline")
            continue
        if len(common) != len(pq) or len(common) != len(base_pq):
            notes.append(f"ratio {g.ratio}: {len(common)} questions paired with the baseline "
                         f"({len(pq)} vs {len(base_pq)} evaluated)")
        delta, lo, hi, p = paired_bootstrap([100.0 * (pq[q] - base_pq[q]) for q in common], n_boot=n_boot, seed=seed)
        out[g.ratio] = Comparison(g.ratio, baseline, delta, lo, hi, p, len(common), len(pq) - len(common),
                                  len(base_pq) - len(common))
    return out


def analyze(rows: list[dict], *, baseline: str = "1:1:1", model=None, dataset=None, budget=None,
            n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> Analysis:
    """Group stats, paired tests against `baseline`, verdict, best adapter and Pareto front of one
    (base model, eval set, budget). Rows of several are refused unless the filters narrow them to one."""
    rows = filter_rows(rows, model=model, dataset=dataset, budget=budget)
    adapters = [dict(r) for r in rows if r["kind"] != "base"]
    if not adapters:
        raise InputError("compare: no evaluated adapters: train and evaluate adapters first")
    _check_single(adapters)
    groups, labels = _groups(adapters)
    notes: list[str] = []
    if any(len(g.seeds) == 1 for g in groups):
        notes.append("ratios with a single seed have no confidence interval (it needs at least 2 seeds)")
    try:  # "1:1:1" also finds 2:2:2; a label such as "1:1:1 (share)" is matched as written
        baseline = labels.get(_ratio_key(Ratio.parse(baseline).as_tuple()), baseline)
    except InputError:
        pass
    comparisons = _comparisons(adapters, groups, baseline, notes, n_boot=n_boot, seed=seed)
    top = [r for r in adapters if r["ratio"] == groups[0].ratio]
    first = adapters[0]
    reference = [r["accuracy"] for r in rows if r["kind"] == "base" and r["base_model"] == first["base_model"]
                 and r["eval_tag"] == first["eval_tag"]]
    return Analysis(
        rows=adapters, base_model=first["base_model"], eval_tag=first["eval_tag"], budget=first["budget"],
        baseline=baseline, groups=groups, comparisons=list(comparisons.values()),
        verdict=_verdict(groups, comparisons, baseline, adapters),
        best=min(top, key=lambda r: (-r["accuracy"], r["trainable_params"], r["name"])),
        pareto=pareto_front(adapters), base_reference=reference[0] if reference else None, notes=notes)


# ------------------------------------------------------------------------------------------ tables and export

_COLUMNS = ["name", "ratio", "seed", "accuracy", "ranks", "trainable_params", "budget", "base_model", "dataset",
            "split", "n", "eval_tag", "train_time_s", "peak_memory_bytes", "kind", "path"]


def table(rows: list[dict]) -> pd.DataFrame:
    """One line per evaluated adapter, with one `acc <answer type>` column per answer type."""
    types = sorted({t for r in rows for t in r["per_answer_type"]})
    return pd.DataFrame([{**{k: r[k] for k in _COLUMNS}, **{f"acc {t}": r["per_answer_type"].get(t) for t in types}}
                         for r in rows], columns=_COLUMNS + [f"acc {t}" for t in types])


def group_table(a: Analysis) -> pd.DataFrame:
    cmp = {c.ratio: c for c in a.comparisons}
    out = []
    for g in a.groups:
        c = cmp.get(g.ratio)
        label = f"{g.ratio} (baseline)" if g.ratio == a.baseline else g.ratio
        out.append({"ratio": label, "seeds": len(g.seeds), "mean": round(g.mean, 2),
                    "95% CI": "n/a (1 seed)" if g.ci_low is None else f"{g.ci_low:.2f} – {g.ci_high:.2f}",
                    "std": None if g.std is None else round(g.std, 2), "ranks": g.ranks,
                    "trainable params": round(g.trainable_params),
                    "Δ vs baseline": 0.0 if g.ratio == a.baseline else (None if c is None else round(c.delta, 2)),
                    "Δ 95% CI": None if c is None else f"{c.ci_low:+.2f} – {c.ci_high:+.2f}",
                    "p": None if c is None else round(c.p_value, 4)})
    return pd.DataFrame(out)


def comparison_table(a: Analysis) -> pd.DataFrame:
    return pd.DataFrame([{**asdict(c), "significant": c.significant} for c in a.comparisons])


def to_dict(a: Analysis) -> dict:
    """Everything the analysis found, JSON-ready (no NaN: undefined values are null)."""
    return {
        "base_model": a.base_model, "eval_tag": a.eval_tag, "budget": a.budget, "baseline": a.baseline,
        "verdict": asdict(a.verdict), "best": a.best, "pareto": a.pareto, "base_reference": a.base_reference,
        "groups": [asdict(g) for g in a.groups],
        "comparisons": [{**asdict(c), "significant": c.significant} for c in a.comparisons],
        "rows": a.rows, "notes": a.notes,
    }


def to_json(a: Analysis) -> str:
    return json.dumps(to_dict(a), indent=2)


def to_csv(rows: list[dict], path=None) -> str:
    """The adapter table as CSV text; also written to `path` when given."""
    text = table(rows).to_csv(index=False)
    if path is not None:
        try:
            Path(path).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"csv: cannot write '{path}' ({exc.strerror})") from None
    return text


# ------------------------------------------------------------------------------------------ charts


def accuracy_chart(a: Analysis) -> alt.LayerChart:
    """Accuracy by ratio: each seed as a dot, the mean as a tick, the 95% CI as an error bar."""
    order = [g.ratio for g in a.groups]
    seeds = pd.DataFrame([{"ratio": r["ratio"], "accuracy": r["accuracy"], "adapter": r["name"], "seed": str(r["seed"])}
                          for r in a.rows])
    means = pd.DataFrame([{"ratio": g.ratio, "mean": g.mean, "ci_low": g.ci_low, "ci_high": g.ci_high,
                           "seeds": len(g.seeds)} for g in a.groups])
    x = alt.X("ratio:N", sort=order, title="ratio v:p:l", axis=alt.Axis(labelAngle=0))
    dots = alt.Chart(seeds).mark_circle(size=60, opacity=0.5).encode(
        x=x, y=alt.Y("accuracy:Q", title="VQA accuracy (%)", scale=alt.Scale(zero=False)),
        tooltip=["adapter", "seed", "accuracy"])
    ticks = alt.Chart(means).mark_tick(thickness=3, size=24, color="black").encode(
        x=x, y="mean:Q", tooltip=["ratio", "mean", "ci_low", "ci_high", "seeds"])
    bars = alt.Chart(means.dropna()).mark_rule(strokeWidth=2, color="black").encode(x=x, y="ci_low:Q", y2="ci_high:Q")
    return alt.layer(dots, bars, ticks)


def pareto_chart(rows: list[dict]) -> alt.LayerChart:
    """Accuracy vs trainable parameters, the Pareto front (fewer params, higher accuracy) as a line."""
    front = set(pareto_front(rows))
    df = pd.DataFrame([{"adapter": r["name"], "ratio": r["ratio"], "trainable_params": r["trainable_params"],
                        "accuracy": r["accuracy"], "pareto": r["name"] in front} for r in rows])
    base = alt.Chart(df).encode(x=alt.X("trainable_params:Q", title="trainable parameters"),
                                y=alt.Y("accuracy:Q", title="VQA accuracy (%)", scale=alt.Scale(zero=False)))
    points = base.mark_circle(size=70).encode(color="ratio:N", tooltip=["adapter", "ratio", "trainable_params",
                                                                        "accuracy", "pareto"])
    line = alt.Chart(df[df["pareto"]].sort_values("trainable_params")).mark_line(
        color="gray", strokeDash=[4, 3], interpolate="step-after").encode(x="trainable_params:Q", y="accuracy:Q")
    return alt.layer(line, points)


def loss_curves(rows: list[dict]) -> pd.DataFrame:
    """(adapter, ratio, seed, step, loss) from each adapter's metrics.jsonl; adapters without one are skipped."""
    out = [{"adapter": r["name"], "ratio": r["ratio"], "seed": str(r["seed"]), "step": m.step, "loss": m.loss}
           for r in rows for m in runs.read_metrics(r["path"]) if m.loss is not None]
    return pd.DataFrame(out, columns=["adapter", "ratio", "seed", "step", "loss"])


def loss_chart(curves: pd.DataFrame) -> alt.Chart:
    """Training loss of the compared runs overlaid (`curves` from `loss_curves`), one colour per ratio."""
    return alt.Chart(curves).mark_line().encode(
        x=alt.X("step:Q"), y=alt.Y("loss:Q", scale=alt.Scale(zero=False)), color="ratio:N", detail="adapter:N",
        tooltip=["adapter", "seed", "step", "loss"])


def answer_type_chart(a: Analysis) -> alt.Chart:
    """Mean accuracy per answer type, one bar per ratio inside each answer type."""
    df = pd.DataFrame([{"ratio": g.ratio, "answer type": t, "accuracy": v}
                       for g in a.groups for t, v in g.per_answer_type.items()],
                      columns=["ratio", "answer type", "accuracy"])
    return alt.Chart(df).mark_bar().encode(
        x=alt.X("answer type:N", axis=alt.Axis(labelAngle=0)), xOffset=alt.XOffset("ratio:N", sort=[g.ratio for g in a.groups]),
        y=alt.Y("accuracy:Q", title="VQA accuracy (%)"), color="ratio:N", tooltip=["ratio", "answer type", "accuracy"])
