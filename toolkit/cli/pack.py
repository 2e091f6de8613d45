"""`python -m toolkit pack`: train a pack of arms in one process on one base model, then evaluate each arm there
(toolkit.study.packrun; a `sweep --pack` job's step).

    python -m toolkit pack --settings-json '{"arms": [{"train": {...}, "evaluate": {...}}, ...]}'   # or a file
    python -m toolkit pack --settings-json pack.json --no-fuse --json

Each arm writes the run folder `train --settings-json <its train settings>` writes and the evaluation `evaluate
--settings-json <its evaluate settings>` writes. Run again, it resumes every unfinished arm from its newest
checkpoint and skips the arms and evaluations already done.

Exit status (toolkit.outcomes.ExitCode): 0 done; 2 bad input; 3 out of memory; 143 stopped by SIGTERM/SIGUSR2
after checkpointing every unfinished arm.
"""

from __future__ import annotations

import json

from toolkit.outcomes import ExitCode


def cmd_pack(args) -> int:
    from dataclasses import replace

    from toolkit.study.packrun import PackSettings, run_pack

    settings = PackSettings.from_json(args.settings_json)
    if args.no_fuse:
        settings = replace(settings, fuse=False)
    if args.stack_rows is not None:
        settings = replace(settings, stack_rows=args.stack_rows)
    report = run_pack(settings)  # out of memory and interrupted: the CLI's handler (toolkit/cli/__init__.py)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        ran = sum(1 for e in report.evaluations if e["ran"])
        print(f"pack of {len(settings.arms)} arm(s): {report.trained} trained here ({report.mode}"
              f"{'; ' + report.reason if report.reason else ''}), {ran} evaluated here, "
              f"{len(report.evaluations) - ran} evaluation(s) already written")
    return ExitCode.SUCCESS


def register(sub) -> None:
    from toolkit.cli.flags import number

    p = sub.add_parser("pack", help="train several arms in one process on one base model, then evaluate each",
                       description="Train a pack of arms (allocations, seeds, learning rates of one base model) in "
                                   "one process on one copy of the base, each into its own run folder, then "
                                   "evaluate every arm in the same process. How a `sweep --pack` job runs.")
    p.add_argument("--settings-json", required=True, metavar="JSON|FILE",
                   help='{"arms": [{"train": TrainSettings fields, "evaluate": EvalSettings fields or null}, ...]} '
                        "(inline or a file)")
    p.add_argument("--no-fuse", action="store_true", help="train the arms one after another on the shared base "
                   "(the sequential path) even where they could be fused")
    p.add_argument("--stack-rows", type=number(int), metavar="N",
                   help="at most N batch rows in one fused forward (bounds activation memory)")
    p.add_argument("--json", action="store_true", help="print what was trained and evaluated as JSON")
    p.set_defaults(func=cmd_pack)
