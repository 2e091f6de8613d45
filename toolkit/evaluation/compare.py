"""Compare evaluated adapters: the study's statistics, its verdict, the best adapter and tables (charts:
toolkit.evaluation.charts).

    >>> store = scan()                                 # the adapter store (adapters_dir() or a given folder)
    >>> a = analyze(store.rows, baseline="1:1:1")      # refuses mixed base models / eval sets / budgets
    >>> a.verdict.label, a.verdict.reason              # "positive" | "weak positive" | "negative" | "inconclusive"
    >>> a.kept_apart, a.base_row, a.below_base         # runs with other settings; the base model alone
    >>> analyze(store.rows, select_on="val-tag", report_on="test-tag").best   # chosen on one, reported on another
    >>> tables.group_table(a), tables.to_json(a)       # tables and exports: toolkit.evaluation.tables

Runs are pooled as seeds of a ratio only when every other setting is identical (`run_settings`, a
fingerprint over cmba.json's hyper-parameters, training data, base model, budget, mode, targets, alpha rule
and quantization); runs with other settings are kept apart and listed with what differs. Each ratio: mean ±
95% interval over seeds and questions (stats.two_level_mean_ci). Each ratio against the baseline: a two-level bootstrap over seeds and questions
(toolkit.evaluation.stats, paired by seed when both arms ran the same seeds), Holm-adjusted over the K-1
comparisons. The verdict follows the study's success criterion, more than +1 point over the baseline:
*positive* Δ > 1 and significant after adjustment; *weak positive* significant, Δ ≤ 1; *negative* every
ratio's simultaneous (Bonferroni) 95% upper bound below +1, so a 1-point gain is ruled out; *inconclusive*
otherwise, with the seeds (and questions) needed at 80% power. One seed is never enough to decide.
Pure: no Streamlit.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit import runs
from toolkit.calculator.checks import BUDGET_TOLERANCE, spend_mismatch
from toolkit.calculator.spec import Ratio
from toolkit.errors import InputError
from toolkit.evaluation.rows import ComparisonRow
from toolkit.evaluation.scoring import question_accuracy
from toolkit.evaluation.stats import (
    BOOT_SEED,
    N_BOOT,
    holm,
    mean_ci,
    two_level_bootstrap,
    two_level_mean_ci,
)
from toolkit.evaluation.verdict import (
    ALPHA,
    Comparison,
    Group,
    Verdict,
    fingerprint,
    run_settings,
    settings_diff,
    verdict,
)
from toolkit.paths import adapters_dir


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
    rows: list[ComparisonRow] = field(default_factory=list)
    in_progress: list[str] = field(default_factory=list)
    """unfinished runs: their run.json is there and cmba.json not yet (training now, or stopped before the end)"""
    no_cmba: list[str] = field(default_factory=list)
    """other folders without cmba.json (not runs of this toolkit, or their run.json is gone)"""
    not_evaluated: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    """'name: reason' for a cmba.json or results.json that is not valid"""

    def summary(self) -> str:
        parts = [f"{len(self.rows)} evaluations in {self.folder}"]
        for names, what in ((self.in_progress, "unfinished runs (training, or stopped before the end)"),
                            (self.no_cmba, "without cmba.json"), (self.not_evaluated, "not evaluated"),
                            (self.unreadable, "unreadable")):
            if names:
                parts.append(f"{len(names)} {what} ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
        return " · ".join(parts)


def ratio_label(ratio, mode: str = "rank") -> str:
    text = ":".join(f"{float(w):g}" for w in ratio)
    return text if mode == "rank" else f"{text} ({mode})"


def ratio_key(ratio, mode: str = "rank") -> tuple:
    """2:8:2 and 1:4:1 are one ratio: scale so the smallest non-zero weight is 1."""
    low = min(float(w) for w in ratio if float(w) > 0)
    return (mode, *(round(float(w) / low, 6) for w in ratio))


def _row(folder: Path, doc: runs.AdapterDoc, tag: str, results: runs.EvalResult) -> ComparisonRow:
    base, alloc = doc.base_model, doc.allocation or runs.AllocationInfo()
    training, result = doc.training or runs.TrainingInfo(), doc.result or runs.ResultInfo()
    data, scores, kind = results.dataset, results.scores, doc.kind
    if kind != "base" and not alloc.ratio:
        raise ValueError("an adapter's cmba.json needs allocation.ratio")
    comps = alloc.components or {}
    return {
        "name": doc.name, "kind": kind, "path": str(folder), "eval_tag": tag,
        "base_model": base.hub_id or base.id or results.base_model,
        "base_model_id": base.id or results.base_model,
        "dataset": data.get("id"), "split": data.get("split"), "n": scores.get("n", data.get("n")),
        "budget": alloc.budget, "budget_spec": alloc.budget_spec, "mode": alloc.mode,
        "ratio": ratio_label(alloc.ratio, alloc.mode or "rank") if alloc.ratio else kind,
        "ratio_values": list(alloc.ratio) if alloc.ratio else None,
        "ranks": ":".join(str(comps[c]["rank"]) for c in ("vision", "projector", "language")) if comps else "",
        "trainable_params": int(alloc.total or 0), "seed": training.seed,
        "accuracy": float(scores["overall"]), "per_answer_type": dict(scores.get("per_answer_type") or {}),
        "train_time_s": result.train_time_s, "peak_memory_bytes": result.peak_memory_bytes,
        "eval_time_s": results.eval_time_s, "created": results.created,
        "settings": run_settings(doc) if kind != "base" else {},
        "snapshot": bool(result.schedule_steps) and (result.steps or 0) < result.schedule_steps,
    }


def scan(folder=None) -> Store:
    """Rows of every evaluated adapter (and base-model reference) in the store; nothing dropped silently."""
    root = Path(folder) if folder is not None else adapters_dir()
    store = Store(folder=str(root))
    for sub in runs.run_folders(root):
        if not runs.is_complete(sub):
            (store.in_progress if (sub / runs.RUN_INFO).is_file() else store.no_cmba).append(sub.name)
            continue
        try:
            doc = runs.read_adapter_doc(sub)
        except InputError as exc:
            store.unreadable.append(f"{sub.name}: {runs.ADAPTER_DOC} ({exc})")
            continue
        tags = runs.evaluations(sub)
        if not tags:
            store.not_evaluated.append(sub.name)
        for tag in tags:
            try:
                store.rows.append(_row(sub, doc, tag, runs.read_evaluation(sub, tag)))
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
    """the best adapter, chosen on `selection["select_on"]`, its figures from the reported eval set"""
    pareto: list[str]
    base_reference: float | None
    notes: list[str]
    base_row: dict | None = None
    """the base model without adapter on the same eval set (adapters/base--<model>/), when evaluated"""
    below_base: bool = False
    """every compared adapter scores below the base model alone: nothing here is worth publishing"""
    settings: dict = field(default_factory=dict)
    """the compared runs' settings (`run_settings`) and their fingerprint under "fingerprint\""""
    kept_apart: list[dict] = field(default_factory=list)
    """runs with other settings, not pooled: {"fingerprint", "adapters", "differs": {setting: [here, there]}}"""
    selection: dict = field(default_factory=dict)
    """{"select_on", "report_on", "same_questions"}: where the best adapter was chosen and where it is reported"""


def _per_question(row: dict) -> dict[str, float] | None:
    preds = runs.read_predictions(row["path"], row["eval_tag"])
    if preds is None:
        return None
    return {str(p.question_id): float(p.accuracy if p.accuracy is not None else question_accuracy(p.prediction, p.answers))
            for p in preds}


def image_ids(row: dict) -> dict[str, str]:
    """{question id: image id} of a row's predictions.jsonl (questions without one are left out: each is then
    its own cluster)."""
    return {str(p.question_id): str(p.image_id) for p in runs.read_predictions(row["path"], row["eval_tag"]) or []
            if p.image_id is not None}


SINGLE = (("base_model", "base model", "--model"), ("eval_tag", "eval set", "--dataset"), ("budget", "budget", "--budget"))
"""what one comparison holds exactly one of: (row key, name, the flag that picks it)"""


def _is_ratio(label, baseline: str) -> bool:
    try:
        return ratio_key(Ratio.parse(str(label)).as_tuple()) == ratio_key(Ratio.parse(baseline).as_tuple())
    except InputError:
        return str(label) == baseline


def _narrow(rows: list[dict], baseline: str, notes: list[str]) -> list[dict]:
    """One base model, eval set and budget. Of several eval sets, the one holding the baseline and another ratio
    is taken (said in a note): the only such one, else the one with the most ratios, then adapters (a study's
    eval set beside its two-ratio confirmation's); on a tie an InputError lists the exact flags that choose."""
    tags = list(dict.fromkeys(str(r["eval_tag"]) for r in rows))
    fits = [t for t in tags if {_is_ratio(r["ratio"], baseline) for r in rows if str(r["eval_tag"]) == t} == {True, False}]
    if len(fits) > 1:
        size = {t: (len({str(r["ratio"]) for r in rows if str(r["eval_tag"]) == t}),
                    sum(str(r["eval_tag"]) == t for r in rows)) for t in fits}
        ranked = sorted(fits, key=lambda t: size[t], reverse=True)
        if size[ranked[0]] > size[ranked[1]]:
            fits = ranked[:1]
    if len(tags) > 1 and len(fits) == 1:
        rows = [r for r in rows if str(r["eval_tag"]) == fits[0]]
        notes.append(f"eval set {fits[0]} compared: the one with the baseline {baseline} and the most other ratios "
                     f"({', '.join(t for t in tags if t != fits[0])} left out; --dataset chooses)")
    differing, flags = [], []
    for key, what, flag in SINGLE:
        counts = Counter(str(r[key]) for r in rows)
        if len(counts) > 1:
            differing.append(f"{what} ({', '.join(f'{v}: {n}' for v, n in counts.most_common())})")
            flags.append(" or ".join(f"{flag} {v}" for v in (fits if key == "eval_tag" and fits else counts)))
    if differing:
        raise InputError(f"compare: the adapters differ in {' and '.join(differing)}; compare one at a time: "
                         f"pass {'; '.join(flags)}")
    return rows


def _seed_order(r: dict) -> tuple:
    seed = r["seed"]
    return (not isinstance(seed, int), seed if isinstance(seed, int) else 0, str(seed), r["name"])


def _split_settings(adapters: list[dict], wanted: str | None, baseline: str) -> tuple[list[dict], dict, list[dict]]:
    """(runs of one settings fingerprint, its settings, the other fingerprints kept apart). The one compared
    is `wanted` (a fingerprint or its prefix), else the one with the most runs among those whose runs finished
    their schedule (a halving search's early rungs have more runs, but are snapshots on the way)."""
    by_fp: dict[str, list[dict]] = {}
    for r in adapters:
        by_fp.setdefault(fingerprint(r.get("settings") or {}), []).append(r)
    if wanted:
        hits = [fp for fp in by_fp if fp.startswith(str(wanted))]
        if len(hits) != 1:
            raise InputError(f"settings: '{wanted}' matches {len(hits)} of the fingerprints here "
                             f"(available: {', '.join(sorted(by_fp))})")
        chosen = hits[0]
    else:
        chosen = min(by_fp, key=lambda fp: (all(r.get("snapshot") for r in by_fp[fp]), -len(by_fp[fp]), fp))
    here = by_fp[chosen][0].get("settings") or {}
    apart = [{"fingerprint": fp, "adapters": sorted(r["name"] for r in runs),
              "snapshots": all(r.get("snapshot") for r in runs),
              "differs": settings_diff(here, runs[0].get("settings") or {})}
             for fp, runs in sorted(by_fp.items()) if fp != chosen]
    return by_fp[chosen], {"fingerprint": chosen, **here}, apart


def _groups(adapters: list[dict]) -> tuple[list[Group], dict[tuple, str]]:
    """Runs grouped by ratio, best mean first; also the label of each ratio key. Relabels rows in place."""
    by_key: dict[tuple, list[dict]] = {}
    for r in adapters:
        by_key.setdefault(ratio_key(r["ratio_values"], r["mode"] or "rank"), []).append(r)
    groups, labels = [], {}
    for key, members in by_key.items():
        members.sort(key=_seed_order)
        labels[key] = label = members[0]["ratio"]
        for r in members:
            r["ratio"] = label  # 2:8:2 joins 1:4:1 under the label seen first
        accs = [r["accuracy"] for r in members]
        mean, sd, _ = mean_ci(accs)
        half = two_level_mean_ci(accs, questions=min((r.get("n") or 0) for r in members) or None)
        types = sorted({t for r in members for t in r["per_answer_type"]})
        groups.append(Group(
            ratio=label, adapters=[r["name"] for r in members], seeds=[r["seed"] for r in members],
            accuracies=accs, mean=mean, std=sd,  # clipped to [0, 100]: an accuracy's mean cannot lie outside
            ci_low=None if half is None else max(0.0, mean - half), ci_high=None if half is None else min(100.0, mean + half),
            trainable_params=sum(r["trainable_params"] for r in members) / len(members), ranks=members[0]["ranks"],
            per_answer_type={t: float(np.mean([r["per_answer_type"][t] for r in members if t in r["per_answer_type"]]))
                             for t in types}))
    groups.sort(key=lambda g: (-g.mean, g.trainable_params, g.ratio))
    return groups, labels


def _tables(members: list[dict], notes: list[str]) -> tuple[list, list[dict[str, float]]]:
    """(seeds, per-question accuracy tables) of the runs that have predictions.jsonl."""
    seeds, tables = [], []
    for r in members:
        pq = _per_question(r)
        if pq is None:
            notes.append(f"{r['name']}: no predictions.jsonl, left out of the paired test")
        else:
            seeds.append(r["seed"])
            tables.append(pq)
    return seeds, tables


def _comparisons(adapters: list[dict], groups: list[Group], baseline: str, notes: list[str], *, n_boot: int,
                 seed: int) -> dict[str, Comparison]:
    members = {g.ratio: [r for r in adapters if r["ratio"] == g.ratio] for g in groups}
    if baseline not in members:
        return {}
    base_seeds, base_tables = _tables(members[baseline], notes)
    if not base_tables:
        return {}
    base_common = set(base_tables[0]).intersection(*base_tables[1:])
    images = image_ids(members[baseline][0])
    tests = {}
    for g in groups:
        if g.ratio == baseline:
            continue
        seeds, tables = _tables(members[g.ratio], notes)
        if not tables:
            continue
        mine = set(tables[0]).intersection(*tables[1:])
        if any(len(t) != len(mine) for t in tables):
            notes.append(f"ratio {g.ratio}: its runs share {len(mine)} of their questions; only those are compared")
        common = sorted(mine & base_common)  # fixed order: the resampling is reproducible
        if not common:
            notes.append(f"ratio {g.ratio}: no question in common with the baseline")
            continue
        if len(common) != len(mine) or len(common) != len(base_common):
            notes.append(f"ratio {g.ratio}: {len(common)} questions paired with the baseline "
                         f"({len(mine)} vs {len(base_common)} evaluated)")
        # seeds share the data order: the same seeds in both arms are paired, row by row
        paired = (len(seeds) == len(base_seeds) and len(set(seeds)) == len(seeds) and None not in seeds
                  and sorted(map(str, seeds)) == sorted(map(str, base_seeds)))
        order_a = sorted(range(len(seeds)), key=lambda i: str(seeds[i]))
        order_b = sorted(range(len(base_seeds)), key=lambda i: str(base_seeds[i]))
        a = 100.0 * np.array([[tables[i][q] for q in common] for i in order_a])
        b = 100.0 * np.array([[base_tables[i][q] for q in common] for i in order_b])
        clusters = [images.get(q) for q in common] if images else None  # questions on one image resampled together
        tests[g.ratio] = (two_level_bootstrap(ratio=a, baseline=b, paired_seeds=paired, clusters=clusters,
                                              n_boot=n_boot, seed=seed),
                          len(common), len(mine) - len(common), len(base_common) - len(common), len(seeds),
                          len(base_seeds))
    adjusted = dict(zip(tests, holm([t[0].p_value for t in tests.values()])))
    level = 1 - ALPHA / max(1, len(tests))
    return {ratio: Comparison(
        ratio=ratio, baseline=baseline, delta=t.delta, ci_low=t.ci_low, ci_high=t.ci_high, p_value=t.p_value,
        p_adjusted=adjusted[ratio], n_questions=n, n_only_ratio=only_r, n_only_baseline=only_b, seeds=s_r,
        baseline_seeds=s_b, paired_seeds=t.paired_seeds, df=t.df, se=t.se, seed_var=t.seed_var,
        question_var=t.question_var, ci_simultaneous=t.ci(level), question_var_fixed=t.question_var_fixed,
        n_clusters=t.n_clusters)
        for ratio, (t, n, only_r, only_b, s_r, s_b) in tests.items()}


def _best(groups: list[Group], adapters: list[dict]) -> dict | None:
    if not groups:
        return None
    top = [r for r in adapters if r["ratio"] == groups[0].ratio]
    return min(top, key=lambda r: (-r["accuracy"], r["trainable_params"], r["name"]))


def _select_best(select: Analysis, report: list[dict], notes: list[str]) -> dict | None:
    """The best adapter chosen on the selection eval set, with its figures on the reported one."""
    reported = {r["name"]: r for r in report}
    ranked = sorted((r for r in select.rows if r["name"] in reported),
                    key=lambda r: ([g.ratio for g in select.groups].index(r["ratio"]), -r["accuracy"],
                                   r["trainable_params"], r["name"]))
    if not ranked:
        notes.append(f"no adapter evaluated on {select.eval_tag} is evaluated on the reported eval set")
        return None
    chosen = ranked[0]
    return {**reported[chosen["name"]], "selected_on": select.eval_tag, "selection_accuracy": chosen["accuracy"]}


def analyze(rows: list[dict], *, baseline: str = "1:1:1", model=None, dataset=None, budget=None, settings=None,
            select_on=None, report_on=None, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> Analysis:
    """Group stats, two-level bootstrap tests against `baseline` (Holm-adjusted), verdict, best adapter and
    Pareto front of one (base model, eval set, budget, settings fingerprint). Rows of several are refused
    unless the filters narrow them to one; runs with other settings are kept apart (`Analysis.kept_apart`).

    `select_on` / `report_on` (eval tags or dataset ids): the best adapter is chosen on the first and the
    statistics and its figures are reported on the second (default: `dataset`).

        >>> a = analyze(scan().rows, baseline="1:1:1", select_on="shapes__val__n400", report_on="shapes__test__n400")
        >>> a.verdict.label, a.best["name"], a.best["selected_on"]
    """
    report_on = report_on if report_on not in (None, "") else dataset
    if select_on not in (None, "") and report_on in (None, ""):
        raise InputError("report-on: give the eval set to report on with --select-on (a different one)")
    if select_on not in (None, "") and str(select_on) == str(report_on):
        raise InputError(f"select-on: must differ from report-on ('{select_on}'): selecting and reporting on the "
                         "same questions overstates the best adapter")
    a = _analyze(rows, baseline=baseline, model=model, dataset=report_on, budget=budget, settings=settings,
                 n_boot=n_boot, seed=seed)
    if select_on in (None, ""):
        a.selection = {"select_on": a.eval_tag, "report_on": a.eval_tag, "same_questions": True}
        if a.best is not None:
            a.notes.append("the best adapter is selected and reported on the same questions, so its figure is "
                           "optimistic; --select-on / --report-on choose on one eval set and report on another")
        return a
    chosen = a.settings.get("fingerprint")
    select = _analyze(rows, baseline=baseline, model=model, dataset=select_on, budget=budget, settings=chosen,
                      n_boot=2, seed=seed)
    a.best = _select_best(select, a.rows, a.notes)
    a.selection = {"select_on": select.eval_tag, "report_on": a.eval_tag, "same_questions": False}
    return a


def _analyze(rows, *, baseline, model, dataset, budget, settings, n_boot, seed) -> Analysis:
    rows = filter_rows(rows, model=model, dataset=dataset, budget=budget)
    adapters = [dict(r) for r in rows if r["kind"] != "base"]
    if not adapters:
        raise InputError("compare: no evaluated adapters: train and evaluate adapters first")
    notes: list[str] = []
    adapters = _narrow(adapters, baseline, notes)
    adapters, chosen, apart = _split_settings(adapters, settings, baseline)
    spend = spend_mismatch([r.get("trainable_params") for r in adapters], tolerance=BUDGET_TOLERANCE / 100)
    if spend:  # labels say "same budget"; what each run actually trained decides
        raise InputError(f"compare: these runs are not budget-matched: {spend}; retrain the outliers with mixed "
                         "rounding (the default) or compare them with --budget filters apart")
    snapshots = sum(len(o["adapters"]) for o in apart if o["snapshots"])
    if snapshots:  # a halving search's earlier rungs: evaluation points of the same runs, never pooled as seeds
        notes.append(f"{snapshots} rung snapshot(s) of a halving search (the same runs at an earlier step) are not "
                     "compared with the final runs; the Study page (`study`) shows each rung")
    for other in (o for o in apart if not o["snapshots"]):
        differs = "; ".join(f"{k}: {here} here, {there} there" for k, (here, there) in other["differs"].items())
        notes.append(f"{len(other['adapters'])} run(s) with other settings are kept apart (fingerprint "
                     f"{other['fingerprint']}: {', '.join(other['adapters'])}), differing in {differs}; choose them "
                     "under Training settings (compare --settings)")
    groups, labels = _groups(adapters)
    if any(len(g.seeds) == 1 for g in groups):
        notes.append("ratios with a single seed have no confidence interval (it needs at least 2 seeds)")
    try:  # "1:1:1" also finds 2:2:2; a label such as "1:1:1 (share)" is matched as written
        baseline = labels.get(ratio_key(Ratio.parse(baseline).as_tuple()), baseline)
    except InputError as exc:  # neither a ratio nor a label here ('x:y', 'nan:1:1' used to match nothing silently)
        if baseline not in labels.values():
            raise InputError(f"baseline: {str(exc).removeprefix('ratio: ')} (ratios here: "
                             f"{', '.join(sorted(labels.values()))})") from None
    comparisons = _comparisons(adapters, groups, baseline, notes, n_boot=n_boot, seed=seed)
    first = adapters[0]
    base_rows = [r for r in rows if r["kind"] == "base" and r["base_model"] == first["base_model"]
                 and r["eval_tag"] == first["eval_tag"]]
    base_row = dict(base_rows[0]) if base_rows else None
    below = base_row is not None and all(r["accuracy"] < base_row["accuracy"] for r in adapters)
    if below:
        notes.append(f"every adapter scores below the base model alone ({base_row['accuracy']:.2f}%): "
                     "none is worth publishing")
    return Analysis(
        rows=adapters, base_model=first["base_model"], eval_tag=first["eval_tag"], budget=first["budget"],
        baseline=baseline, groups=groups, comparisons=list(comparisons.values()),
        verdict=verdict(groups, comparisons, baseline), best=_best(groups, adapters),
        pareto=pareto_front(adapters), base_reference=None if base_row is None else base_row["accuracy"],
        notes=notes, base_row=base_row, below_base=below, settings=chosen, kept_apart=apart)


# ------------------------------------------------------------------------------------------ loss curves

def loss_curves(rows: list[dict]) -> pd.DataFrame:
    """(adapter, ratio, seed, step, loss) from each adapter's metrics.jsonl; adapters without one are skipped."""
    out = [{"adapter": r["name"], "ratio": r["ratio"], "seed": str(r["seed"]), "step": m.step, "loss": m.loss}
           for r in rows for m in runs.read_metrics(r["path"]) if m.loss is not None]
    return pd.DataFrame(out, columns=["adapter", "ratio", "seed", "step", "loss"])
