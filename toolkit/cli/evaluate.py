"""`python -m toolkit evaluate`: official VQA accuracy of an adapter (or of the base model) on a split.

    python -m toolkit evaluate --adapter adapters/demo-1-4-1-rank8-s0 --dataset synthetic:shapes --split validation --limit 500
    python -m toolkit evaluate --base demo --dataset synthetic:shapes --split validation --limit 500   # reference row
"""

from __future__ import annotations

import json
import sys


def cmd_evaluate(args) -> int:
    from toolkit.cli.train import _int
    from toolkit.data.sources import parse_columns
    from toolkit.errors import InputError
    from toolkit.evaluation.evaluate import evaluate_adapter, evaluate_base

    if bool(args.adapter) == bool(args.base):
        raise InputError("adapter: give --adapter DIR (a trained adapter) or --base MODEL (the base model alone)")
    common = dict(split=args.split, limit=_int(args.limit, "limit"), columns=parse_columns(args.columns),
                  image_dir=args.image_dir, sample_seed=_int(args.sample_seed, "sample-seed"),
                  batch_size=_int(args.batch_size, "batch-size"), max_new_tokens=_int(args.max_new_tokens, "max-new-tokens"),
                  log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.adapter:
        doc = evaluate_adapter(args.adapter, args.dataset, **common)
    else:
        doc = evaluate_base(args.base, args.dataset, revision=args.revision, **common)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        s = doc["scores"]
        who = doc["adapter"] or f"base model {doc['base_model']}"
        print(f"{who}: VQA accuracy {s['overall']:.2f} on {s['n']} questions of {doc['dataset']['id']} "
              f"({doc['dataset']['split']}) in {doc['eval_time_s']:.1f} s")
        for t, v in sorted(s["per_answer_type"].items()):
            print(f"  {t:<8} {v:6.2f}")
        print(f"results: {doc['path']}")
    return 0


def register(sub) -> None:
    from toolkit.cli.train import add_data_flags

    p = sub.add_parser("evaluate", help="VQA accuracy of an adapter or of the base model",
                       description="Batched greedy generation with the adapter unmerged, scored with the official "
                                   "VQA accuracy; results are stored in <adapter>/eval/<tag>/.")
    p.add_argument("--adapter", help="adapter folder (with cmba.json)")
    p.add_argument("--base", metavar="MODEL", help="evaluate the base model alone (the reference row)")
    p.add_argument("--revision", help="Hub revision of --base")
    add_data_flags(p)
    p.set_defaults(split="validation")
    p.add_argument("--batch-size", default="32", help="questions per generate call (default 32)")
    p.add_argument("--max-new-tokens", default="10", help="answer length limit in tokens (default 10)")
    p.add_argument("--json", action="store_true", help="print results.json")
    p.set_defaults(func=cmd_evaluate)
