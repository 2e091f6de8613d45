"""`python -m toolkit train`: train one adapter for one allocation (see toolkit.training.engine).

    python -m toolkit train --model demo --dataset synthetic:shapes --ratio 1:4:1 --budget-rank 8 --max-steps 200
    python -m toolkit train ... --output adapters/my-run --resume      # continue from the last complete checkpoint
    python -m toolkit train --settings-json '{"model": "demo", ...}'   # how a queued sweep job runs it

The flags are the fields of `toolkit.training.settings.TrainSettings` (toolkit/cli/flags.py derives them).
With `--expect-lora-sha256` (sweeps set it) the allocation is recomputed first and training is refused when its
LoraConfig differs from the planned one.

Exit status (toolkit.outcomes.ExitCode): 0 done; 2 bad input (one line on stderr); 3 out of memory
(`error: out_of_memory: ...`); 143 stopped by SIGTERM/SIGUSR2 after saving a checkpoint.
"""

from __future__ import annotations

import json

from toolkit.outcomes import ExitCode


def settings_from_args(args):
    """The TrainSettings of a parsed `train` command line."""
    from toolkit.cli.flags import from_args
    from toolkit.training.settings import TrainSettings

    return from_args(TrainSettings, args)


def cmd_train(args) -> int:
    from toolkit.training.engine import train
    from toolkit.training.settings import check_allocation

    settings = settings_from_args(args)
    check_allocation(settings)
    doc = train(settings)  # out of memory and interrupted: the CLI's handler (toolkit/cli/__init__.py)
    if args.json:
        print(json.dumps(doc, indent=2))
    return ExitCode.SUCCESS


def register(sub) -> None:
    from toolkit.cli.flags import add_flags, add_settings_json
    from toolkit.training.settings import TrainSettings

    p = sub.add_parser("train", help="train one LoRA adapter for one allocation",
                       description="Train a LoRA adapter whose per-component ranks follow an allocation "
                                   "(same flags as `allocate`). Writes adapters/<name>/ with PEFT files and cmba.json.")
    add_flags(p, TrainSettings)
    add_settings_json(p, TrainSettings)
    p.add_argument("--json", action="store_true", help="print cmba.json when done")
    p.set_defaults(func=cmd_train)
