"""CLI commands `score` and `compare` (added to `python -m toolkit` through `register`).

    python -m toolkit score --predictions preds.jsonl --annotations annotations.jsonl [--json] [--allow-missing]
    python -m toolkit compare [--baseline 1:1:1] [--model M] [--dataset D] [--budget B] [--settings FP]
                              [--select-on TAG --report-on TAG] [--json] [--csv FILE]
"""

# ruff: noqa: T201  (a CLI module: printing is its job, as in toolkit/cli.py)

from __future__ import annotations

import json

from toolkit.errors import InputError


def cmd_score(args) -> int:
    from toolkit.evaluation.scoring import read_annotations, read_predictions, score

    s = score(read_predictions(args.predictions), read_annotations(args.annotations), allow_missing=args.allow_missing)
    skipped = s["skipped"]
    if args.json:
        doc = {k: s[k] for k in ("overall", "per_answer_type", "per_question_type", "n")}
        if skipped["predictions_without_annotation"] or skipped["annotations_without_prediction"]:
            doc["skipped"] = skipped
        print(json.dumps(doc, indent=2))
        return 0
    print(f"VQA accuracy {s['overall']:.2f}% over {s['n']} questions")
    if skipped["predictions_without_annotation"] or skipped["annotations_without_prediction"]:
        a, b = skipped["predictions_without_annotation"], skipped["annotations_without_prediction"]
        print(f"skipped: {a} prediction{'s' * (a != 1)} without annotation, "
              f"{b} annotated question{'s' * (b != 1)} without prediction")
    for title, table in (("answer type", s["per_answer_type"]), ("question type", s["per_question_type"])):
        if table:
            print(f"\nper {title}:")
            for name, acc in sorted(table.items(), key=lambda kv: -kv[1]):
                print(f"  {name:<32} {acc:6.2f}%")
    return 0


def _print_analysis(a, store) -> None:
    from toolkit.evaluation import tables

    budget = f"{a.budget:,} params" if isinstance(a.budget, int) else str(a.budget)
    print(f"{len(a.rows)} evaluated adapters · base model {a.base_model} · eval set {a.eval_tag} · budget {budget}"
          f" · settings {a.settings.get('fingerprint')}")
    print(store.summary())
    print(f"\n{'ratio':<24} {'seeds':>5} {'mean %':>7} {'95% CI':>17} {'ranks':>10} {'params':>13}")
    for g in a.groups:
        ci = tables.ci_text(g)
        print(f"{g.ratio:<24} {len(g.seeds):>5} {g.mean:>7.2f} {ci:>17} {g.ranks:>10} {round(g.trainable_params):>13,}")
    if a.base_row is not None:
        print(f"{'base model (no adapter)':<24} {'':>5} {a.base_reference:>7.2f}")
    if a.comparisons:
        print(f"\nagainst {a.baseline}: two-level bootstrap over seeds and questions (Δ in points), "
              f"p Holm-adjusted over {len(a.comparisons)} comparisons:")
        for c in a.comparisons:
            print(f"{c.ratio:<24} Δ {c.delta:+6.2f}  95% CI [{c.ci_low:+.2f}, {c.ci_high:+.2f}]  p = {c.p_value:.4f}  "
                  f"adjusted p = {c.p_adjusted:.4f}  ({c.seeds} vs {c.baseline_seeds} seeds, {c.n_questions} questions)")
    print(f"\nverdict: {a.verdict.label} — {a.verdict.reason}")
    if a.best:
        where = (f", chosen on {a.best['selected_on']} ({a.best['selection_accuracy']:.2f}%)"
                 if a.best.get("selected_on") else "")
        print(f"best adapter: {a.best['name']} ({a.best['accuracy']:.2f}% on {a.eval_tag}, seed {a.best['seed']}"
              f"{where}) at {a.best['path']}")
    if a.below_base:
        print(f"every adapter is below the base model alone ({a.base_reference:.2f}%): do not publish")
    print(f"Pareto front (accuracy vs trainable params): {', '.join(a.pareto)}")
    snapshots = [n for other in a.kept_apart if other["snapshots"] for n in other["adapters"]]
    if snapshots:
        print(f"kept apart: {len(snapshots)} rung snapshot(s) of a halving search (the same runs at an earlier "
              "step; `study` shows each rung)")
    for other in (o for o in a.kept_apart if not o["snapshots"]):
        differs = "; ".join(f"{k}: {here} here, {there} there" for k, (here, there) in other["differs"].items())
        print(f"kept apart (settings {other['fingerprint']}): {', '.join(other['adapters'])} — {differs}")
    for note in a.notes:
        print(f"note: {note}")


def cmd_compare(args) -> int:
    from toolkit.evaluation import compare, tables

    store = compare.scan(args.adapters_dir)
    if not store.rows:
        raise InputError(f"compare: no evaluated adapters ({store.summary()}); train and evaluate adapters first: "
                         "python -m toolkit sweep ..., then python -m toolkit evaluate --adapter DIR --dataset D")
    a = compare.analyze(store.rows, baseline=args.baseline, model=args.model, dataset=args.dataset, budget=args.budget,
                        settings=args.settings, select_on=args.select_on, report_on=args.report_on)
    if args.csv:
        tables.to_csv(a.rows, args.csv)
    from toolkit.evaluation import recommendation, retrieval

    rec = recommendation.recommend([r for r in store.rows if r["base_model"] == a.base_model and r["budget"] == a.budget],
                                   eval_tag=a.eval_tag)  # the study's answer (None: < 3 ratios)
    if args.json:
        doc = tables.to_dict(a)
        doc["recommendation"] = None if rec is None else rec.to_dict()
        doc["retrieval"] = {"summary": retrieval.summary(a.rows + ([a.base_row] if a.base_row else [])),
                            "against_baseline": retrieval.against_baseline(a.rows, baseline=a.baseline)}
        doc["store"] = {"folder": store.folder, "no_cmba": store.no_cmba, "not_evaluated": store.not_evaluated,
                        "unreadable": store.unreadable}
        print(json.dumps(doc, indent=2))
    else:
        _print_analysis(a, store)
        for row in retrieval.summary(a.rows + ([a.base_row] if a.base_row else [])):
            print(f"retrieval {row['retrieval set']} · {row['ratio']} ({row['seeds']} seeds): "
                  + "  ".join(f"{k} {v:.1f}" for k, v in row.items() if k.endswith(("@1", "@5", "@10"))))
        for row in retrieval.against_baseline(a.rows, baseline=a.baseline):
            name = next(k for k in row if k.startswith("Δ"))
            print(f"retrieval {row['retrieval set']} · {row['ratio']}: {name} {row[name]:+.2f} 95% CI "
                  f"[{row['95% CI'][0]:+.2f}, {row['95% CI'][1]:+.2f}] p = {row['p']:.4f} Holm p = {row['Holm p']:.4f}")
        if rec is not None:
            from toolkit.cli.study import print_recommendation

            print()
            print_recommendation(rec.to_dict())
        if args.csv:
            print(f"table written to {args.csv}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("score", help="official VQA accuracy of given predictions",
                       description="VQA accuracy exactly as the official VQAv2 evaluation, from JSONL files.")
    p.add_argument("--predictions", required=True, metavar="P.jsonl", help='lines {"question_id", "answer"}')
    p.add_argument("--annotations", required=True, metavar="A.jsonl",
                   help='lines {"question_id", "answers": [...], "answer_type"?, "question_type"?}')
    p.add_argument("--allow-missing", action="store_true",
                   help="score the questions present in both files and report how many were skipped")
    p.add_argument("--json", action="store_true", help="print {overall, per_answer_type, per_question_type, n}")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("compare", help="compare evaluated adapters: stats, verdict, best adapter",
                       description="Group evaluated adapters with identical settings by ratio, test each against a "
                                   "baseline ratio (two-level bootstrap over seeds and questions, Holm-adjusted), "
                                   "and give the study's verdict.")
    p.add_argument("--baseline", default="1:1:1", help="ratio every other ratio is compared with (default 1:1:1)")
    p.add_argument("--model", help="only adapters of this base model (id or Hub id)")
    p.add_argument("--dataset", help="only this eval set (eval tag or dataset id)")
    p.add_argument("--budget", help="only this budget (trainable params)")
    p.add_argument("--settings", metavar="FP", help="compare the runs of this settings fingerprint (or prefix); "
                                                     "default: the one with the most fully trained runs (not halving snapshots), the others kept apart")
    p.add_argument("--select-on", metavar="TAG", help="choose the best adapter on this eval set (tag or dataset id)")
    p.add_argument("--report-on", metavar="TAG", help="report the statistics and the chosen adapter on this eval set")
    p.add_argument("--adapters-dir", metavar="DIR", help="adapter store (default: adapters/ or $CMBA_ADAPTERS_DIR)")
    p.add_argument("--json", action="store_true", help="print the whole analysis as one JSON object")
    p.add_argument("--csv", metavar="FILE", help="write the table of compared adapters as CSV")
    p.set_defaults(func=cmd_compare)
