"""`python -m toolkit evaluate`: official VQA accuracy of an adapter (or of the base model) on a split.

    python -m toolkit evaluate --adapter adapters/demo-1-4-1-rank8-s0 --dataset synthetic:shapes --split validation --limit 500
    python -m toolkit evaluate --base demo --dataset synthetic:shapes --split validation --limit 500   # reference row
    python -m toolkit evaluate --settings-json '{"adapter": ..., "dataset": ...}'     # how a sweep job runs it

The flags are the fields of `toolkit.training.settings.EvalSettings` (toolkit/cli/flags.py derives them).
"""

from __future__ import annotations

import json
import sys
import time

from toolkit.errors import InputError


def cmd_evaluate(args) -> int:
    from toolkit.cli.flags import from_args
    from toolkit.evaluation.evaluate import evaluate_adapter, evaluate_base
    from toolkit.training.settings import EvalSettings

    t0 = time.perf_counter()
    s = from_args(EvalSettings, args)
    common = dict(split=s.split, limit=s.limit, columns=s.columns, image_dir=s.image_dir, sample_seed=s.sample_seed,
                  batch_size=s.batch_size, max_new_tokens=s.max_new_tokens,
                  log=lambda m: print(m, file=sys.stderr, flush=True))
    common.update(holdout=s.holdout, images_anywhere=s.images_anywhere)
    if s.adapter:
        if s.quantize:
            raise InputError("quantize: applies to --base only (an adapter is evaluated as it was trained)")
        doc = evaluate_adapter(s.adapter, s.dataset, allow_contaminated=s.allow_contaminated, **common)
    else:
        doc = evaluate_base(s.base, s.dataset, revision=s.revision, quantize=s.quantize, **common)
    total = time.perf_counter() - t0
    generation = doc["eval_time_s"]
    if args.json:
        print(json.dumps({**doc, "total_time_s": round(total, 3)}, indent=2))  # eval_time_s: generation alone
    else:
        scores = doc["scores"]
        who = doc["adapter"] or f"base model {doc['base_model']}"
        print(f"{who}: VQA accuracy {scores['overall']:.2f} on {scores['n']} questions of {doc['dataset']['id']} "
              f"({doc['dataset']['split']}) in {_seconds(total)} s (loading model and data "
              f"{_seconds(max(0.0, total - generation))} s, generation {_seconds(generation)} s)")
        for t, v in sorted(scores["per_answer_type"].items()):
            print(f"  {t:<8} {v:6.2f}")
        print(f"results: {doc['path']}")
    return 0


def register(sub) -> None:
    from toolkit.cli.flags import add_flags, add_settings_json
    from toolkit.training.settings import EvalSettings

    p = sub.add_parser("evaluate", help="VQA accuracy of an adapter or of the base model",
                       description="Batched greedy generation with the adapter unmerged, scored with the official "
                                   "VQA accuracy; results are stored in <adapter>/eval/<tag>/.")
    add_flags(p, EvalSettings)
    add_settings_json(p, EvalSettings)
    p.add_argument("--json", action="store_true", help="print results.json")
    p.set_defaults(func=cmd_evaluate)


def _seconds(x: float) -> str:
    """Seconds to a tenth from 1 s up and to a millisecond below, so a 40-ms generation is not shown as 0.0."""
    return f"{x:.1f}" if x >= 1 else f"{x:.3f}"
