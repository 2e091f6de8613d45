"""`python -m toolkit train`: train one adapter for one allocation (see toolkit.training.engine).

    python -m toolkit train --model demo --dataset synthetic:shapes --ratio 1:4:1 --budget-rank 8 --max-steps 200
    python -m toolkit train ... --output adapters/my-run --resume      # continue from the last complete checkpoint

Exit status (toolkit.outcomes.ExitCode): 0 done; 2 bad input (one line on stderr); 3 out of memory
(`error: out_of_memory: ...`); 143 stopped by SIGTERM/SIGUSR2 after saving a checkpoint.
"""

from __future__ import annotations

import json
import sys

from toolkit.outcomes import ExitCode, Interrupted, OutOfMemory


def add_data_flags(p) -> None:
    p.add_argument("--dataset", required=True,
                   help="synthetic:shapes[?n=2000&seed=0], a JSONL file, a saved dataset folder, or a Hub dataset id")
    p.add_argument("--split", default="train", help="dataset split (default train)")
    p.add_argument("--limit", metavar="N", help="deterministic subset of N records")
    p.add_argument("--columns", help="column mapping FIELD=COLUMN,... (fields: question_id, image, question, "
                                     "answers, answer_type, question_type)")
    p.add_argument("--image-dir", help="folder that relative image paths are resolved against")
    p.add_argument("--dataset-config", help="dataset configuration (subset) name for Hub datasets")
    p.add_argument("--dataset-revision", help="Hub dataset revision")
    p.add_argument("--sample-seed", default="0", help="seed that picks the --limit subset (default 0, "
                                                      "independent of --seed so every run sees the same records)")


def _int(value, field):
    from toolkit.calculator.spec import parse_int

    return parse_int(value, field)


def _float(value, field):
    from toolkit.errors import InputError

    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise InputError(f"{field}: must be a number, got '{value}'") from None


def settings_from_args(args):
    from toolkit.cli.allocate import allocation_request
    from toolkit.data.sources import parse_columns
    from toolkit.training.engine import TrainSettings

    spec, ranks, targets, alpha, patterns, budget = allocation_request(args)
    component_lr = {c: _float(getattr(args, f"lr_{c}"), f"lr-{c}") for c in ("vision", "projector", "language")
                    if getattr(args, f"lr_{c}") is not None}
    return TrainSettings(
        model=args.model, revision=args.revision, dataset=args.dataset, spec=spec, audit_ranks=ranks,
        audit_budget=budget, targets=targets, alpha=alpha, patterns=args.patterns, split=args.split,
        limit=_int(args.limit, "limit"), columns=parse_columns(args.columns), image_dir=args.image_dir,
        dataset_revision=args.dataset_revision, dataset_config=args.dataset_config,
        sample_seed=_int(args.sample_seed, "sample-seed"), seed=_int(args.seed, "seed"),
        max_steps=_int(args.max_steps, "max-steps"), epochs=_float(args.epochs, "epochs"),
        batch_size=_int(args.batch_size, "batch-size"), grad_accum=_int(args.grad_accum, "grad-accum"),
        learning_rate=_float(args.lr, "lr"), component_lr=component_lr,
        warmup_ratio=_float(args.warmup_ratio, "warmup-ratio"), weight_decay=_float(args.weight_decay, "weight-decay"),
        lora_dropout=_float(args.lora_dropout, "lora-dropout"), precision=args.precision,
        gradient_checkpointing=args.gradient_checkpointing, quantize=args.quantize,
        checkpoint_every=_int(args.checkpoint_every, "checkpoint-every"), output=args.output, name=args.name,
        resume=args.resume, overwrite=args.overwrite, keep_checkpoints=args.keep_checkpoints,
        progress=not args.no_progress,
    )


def cmd_train(args) -> int:
    from toolkit.training.engine import train

    settings = settings_from_args(args)
    try:
        doc = train(settings)
    except OutOfMemory as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Interrupted as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps(doc, indent=2))
    return ExitCode.SUCCESS


def register(sub) -> None:
    from toolkit.cli.allocate import add_allocation_flags

    p = sub.add_parser("train", help="train one LoRA adapter for one allocation",
                       description="Train a LoRA adapter whose per-component ranks follow an allocation "
                                   "(same flags as `allocate`). Writes adapters/<name>/ with PEFT files and cmba.json.")
    add_allocation_flags(p)
    p.add_argument("--audit", metavar="V:P:L", help="train explicit ranks instead of a solved allocation")
    add_data_flags(p)
    t = p.add_argument_group("training")
    t.add_argument("--seed", default="0", help="training seed: initialisation, dropout, data order (default 0)")
    t.add_argument("--max-steps", help="optimizer steps (default: one epoch)")
    t.add_argument("--epochs", help="epochs instead of --max-steps")
    t.add_argument("--batch-size", default="8", help="per-step batch (default 8)")
    t.add_argument("--grad-accum", default="1", help="gradient accumulation steps (default 1)")
    t.add_argument("--lr", default="2e-4", help="learning rate (default 2e-4)")
    for c in ("vision", "projector", "language"):
        t.add_argument(f"--lr-{c}", help=f"learning rate of the {c} LoRA (default --lr)")
    t.add_argument("--warmup-ratio", default="0.03", help="linear warm-up share of the steps, then cosine (default 0.03)")
    t.add_argument("--weight-decay", default="0", help="AdamW weight decay (default 0)")
    t.add_argument("--lora-dropout", default="0.05", help="LoRA dropout (default 0.05)")
    t.add_argument("--precision", default="auto", help="auto (bf16 on a GPU that has it, else fp32), fp32, bf16, fp16")
    t.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for activation memory")
    t.add_argument("--quantize", choices=None, help="4bit: QLoRA (bitsandbytes nf4 base; projector and LoRA kept "
                                                     "in higher precision)")
    t.add_argument("--checkpoint-every", default="50", help="atomic checkpoint every N steps (default 50)")
    o = p.add_argument_group("output")
    o.add_argument("--output", help="adapter folder (default adapters/<name>)")
    o.add_argument("--name", help="adapter name (default <model>-r<ranks>-b<budget>-s<seed>)")
    o.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint (fresh if none)")
    o.add_argument("--overwrite", action="store_true", help="delete what the output folder holds and start over")
    o.add_argument("--keep-checkpoints", action="store_true", help="keep checkpoints/ after training")
    o.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    o.add_argument("--json", action="store_true", help="print cmba.json when done")
    p.set_defaults(func=cmd_train)
