"""`python -m toolkit import-eval`: an lmms-eval `--log_samples` file stored as an evaluation of an adapter.

    python -m toolkit import-eval --adapter adapters/demo-1-4-1-rank8-s0 --dataset lmms-lab/VQAv2 \\
        --split validation lmms-eval-out/<model>/<date>_samples_vqav2_val.jsonl
    python -m toolkit import-eval --adapter demo-1-4-1-rank8-s0 samples_vqav2_val.jsonl --json   # lines with doc

The evaluation lands in `<adapter>/eval/lmms-eval__<task>__n<N>/`, where `compare` finds it like any other
(toolkit/interop/lmms_eval.py).
"""

from __future__ import annotations

import json
import sys


def cmd_import_eval(args) -> int:
    from toolkit.cli.export import resolve_adapter
    from toolkit.data.sources import parse_columns
    from toolkit.interop.lmms_eval import import_samples

    doc = import_samples(resolve_adapter(args.adapter), args.file, task=args.task, dataset=args.dataset,
                         split=args.split, columns=parse_columns(args.columns) if args.columns else None,
                         image_dir=args.image_dir, metric=args.metric, allow_contaminated=args.allow_contaminated,
                         log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    scores = doc["scores"]
    print(f"{doc['adapter']}: {doc['settings']['task']} accuracy {scores['overall']:.2f} on {scores['n']} questions "
          f"({doc['settings']['scored_with']})")
    for t, v in sorted(scores.get("per_answer_type", {}).items()):
        print(f"  {t:<8} {v:6.2f}")
    print(f"eval set: {doc['tag']}  (python -m toolkit compare --dataset {doc['tag']})")
    print(f"results: {doc['path']}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("import-eval", help="bring lmms-eval's per-sample outputs back as an evaluation",
                       description="Read lmms-eval's --log_samples file (<date>_samples_<task>.jsonl), score the "
                                   "answers with the official VQA scorer, and store them in <adapter>/eval/"
                                   "lmms-eval__<task>__n<N>/ so that compare pools them by seed, images together.")
    p.add_argument("file", metavar="FILE", help="lmms-eval's samples JSONL file")
    p.add_argument("--adapter", required=True, metavar="DIR", help="adapter folder, or its name in the adapters dir")
    p.add_argument("--task", help="the lmms-eval task (default: read from the file name)")
    p.add_argument("--dataset", help="the split the task read, where lines have no doc (lmms-eval 0.4+), e.g. "
                                     "lmms-lab/VQAv2; doc_id is the row")
    p.add_argument("--split", default="validation", help="split of --dataset (default validation)")
    p.add_argument("--columns", help="column mapping of --dataset, e.g. question=q,answers=a")
    p.add_argument("--image-dir", help="image folder of a JSONL --dataset")
    p.add_argument("--metric", help="the task's per-sample metric used as accuracy when there are no human answers")
    p.add_argument("--allow-contaminated", action="store_true",
                   help="import questions the adapter trained on (the tag is marked __contaminated)")
    p.add_argument("--json", action="store_true", help="print results.json")
    p.set_defaults(func=cmd_import_eval)
