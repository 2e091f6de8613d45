"""The "Study" section of a published adapter's card: the budget-matched study the adapter came from.

    >>> study_section(Path("adapters/demo-r1-4-1-b8-s1-c96636a5"))   # Markdown lines, [] for a lone adapter

An adapter published from a sweep is one seed of one ratio, often the best of many runs on the same questions.
Its own accuracy alone overstates what its ratio does. The card therefore also gives what Compare gives for the
adapter's store (the folder holding it), restricted to its base model, eval set, budget and settings fingerprint,
the same numbers as `compare` prints: each ratio's mean over its seeds with a 95% interval, the two-level bootstrap
against uniform 1:1:1 (Holm-adjusted), the verdict, this run's place among them, and a warning when it is the
study's best adapter picked on the same questions. A store where the adapter has no peers (or whose runs cannot be
compared: no common settings, budgets that differ) adds nothing.
"""

from __future__ import annotations

from pathlib import Path

from toolkit.errors import InputError


def _row_of(rows: list[dict], adapter_dir: Path) -> dict | None:
    """The adapter's compare row on its largest evaluation (most questions), or None when it has none."""
    mine = [r for r in rows if r["kind"] != "base" and Path(r["path"]).resolve() == adapter_dir.resolve()]
    return max(mine, key=lambda r: (r["n"] or 0, r["eval_tag"])) if mine else None


def below_base(adapter_dir: str | Path) -> str | None:
    """A one-line warning when the adapter scores below its base model alone on the same questions (its largest
    evaluation against a base reference of the same model and eval set in its store), else None.

    The Publish page shows it next to Push: the card says it too, but deep in its tables."""
    from toolkit.evaluation import compare

    adapter_dir = Path(adapter_dir)
    rows = compare.scan(adapter_dir.parent).rows
    me = _row_of(rows, adapter_dir)
    if me is None or me.get("accuracy") is None:
        return None
    bases = [r for r in rows if r["kind"] == "base" and r["base_model"] == me["base_model"]
             and r["eval_tag"] == me["eval_tag"] and r.get("accuracy") is not None]
    if not bases or me["accuracy"] >= bases[0]["accuracy"]:
        return None
    return (f"This adapter scores {me['accuracy']:.2f}% on {me['eval_tag']}, below its base model alone "
            f"({bases[0]['accuracy']:.2f}% on the same questions): publishing it publishes a regression.")


def study_section(adapter_dir: Path, *, baseline: str = "1:1:1") -> list[str]:
    """Markdown lines of the card's study section, or [] when the adapter's store holds no peers of it."""
    from toolkit.evaluation import compare, tables
    from toolkit.evaluation.verdict import fingerprint

    store = compare.scan(adapter_dir.parent)
    me = _row_of(store.rows, adapter_dir)
    if me is None:
        return []
    try:
        a = compare.analyze(store.rows, baseline=baseline, model=me["base_model"], dataset=me["eval_tag"],
                            budget=me["budget"], settings=fingerprint(me.get("settings") or {}))
    except InputError:
        return []  # no baseline among them, budgets that are not matched, ...: Compare says why; the card is silent
    if len(a.rows) < 2:
        return []
    tests = {c.ratio: c for c in a.comparisons}
    mine = next(g for g in a.groups if me["name"] in g.adapters)
    out = ["## Study", "",
           f"This adapter is one of {len(a.rows)} budget-matched runs ({len(a.groups)} ratios, seeds as replicates) "
           f"of the same base model, budget and training settings, all evaluated on `{a.eval_tag}` "
           f"({me['n']} questions). Each ratio over its seeds, and against {a.baseline} (two-level bootstrap over "
           "seeds and questions, Holm-adjusted over the ratios):", "",
           f"| ratio | seeds | mean accuracy (%) | 95% CI | Δ vs {a.baseline} (points) | 95% CI | Holm p |",
           "|---|---|---|---|---|---|---|"]
    for g in a.groups:
        c = tests.get(g.ratio)
        label = f"**{g.ratio}** (this adapter's)" if g is mine else g.ratio
        out.append(f"| {label} | {len(g.seeds)} | {g.mean:.2f} | {'–' if g.ci_low is None else tables.ci_text(g)} | "
                   + (f"{c.delta:+.2f} | {c.ci_low:+.2f} – {c.ci_high:+.2f} | {c.p_adjusted:.4f} |" if c else
                      ("baseline | | |" if g.ratio == a.baseline else "– | | |")))
    reason = a.verdict.reason[:1].upper() + a.verdict.reason[1:]
    out += ["", f"**Verdict: {a.verdict.label}.** {reason}", "",
            f"This run (ratio {mine.ratio}, seed {me['seed']}) scored {me['accuracy']:.2f}%; its ratio's mean over "
            f"{len(mine.seeds)} seed(s) is {mine.mean:.2f}%"
            + (f"; the base model alone scores {a.base_reference:.2f}% on the same questions." if
               a.base_reference is not None else ".")]
    if a.best and a.best["name"] == me["name"] and a.selection.get("same_questions"):
        out.append("It is the study's best adapter (the best seed of the ratio with the highest mean), picked on "
                   "these same questions, so its own figure is optimistic: the ratio's mean, and the verdict, are the "
                   "fairer figures.")
    if a.below_base:
        out.append(f"Every run of this study scores below the base model alone ({a.base_reference:.2f}%).")
    from toolkit.evaluation import recommendation

    rec = recommendation.recommend([r for r in store.rows if r["base_model"] == me["base_model"]
                                    and r["budget"] == me["budget"]], eval_tag=me["eval_tag"], n_boot=2000)
    if rec is not None:  # the recommendation, and the confirmation's outcome on fresh seeds once it ran
        out += ["", f"**The study's answer: {rec.final}.** {rec.reason[:1].upper() + rec.reason[1:]}."]
    return [*out, ""]
