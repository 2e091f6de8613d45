"""`python -m toolkit allocate` and `presets`: the budget calculator on the command line.

    python -m toolkit allocate --model llava-1.5-7b --ratio 1:4:1 --budget-rank 8
    python -m toolkit allocate --model llava-1.5-7b --ratio 1:4:1 --budget-rank 8 --json
    python -m toolkit allocate --model llava-1.5-7b --audit 4:16:4 --budget-rank 8
    python -m toolkit allocate --model llava-1.5-7b --ratio 1:4:1 --budget-rank 8 --rounding uniform   # 8:32:8
    python -m toolkit allocate --model llava-1.5-7b --ratio 1:1:1 --budget-rank 16 --full-finetune projector
    python -m toolkit presets

The flags are the fields of `toolkit.calculator.settings.AllocateSettings` (model + allocation groups of the
settings tree; toolkit/cli/flags.py derives them): `train` and `sweep` take the same ones, from the same fields.
"""

from __future__ import annotations

import json
from pathlib import Path

from toolkit.errors import InputError


def settings_from_args(args):
    """The AllocateSettings of a parsed `allocate` command line (the allocation group of the settings tree)."""
    from toolkit.calculator.settings import AllocateSettings
    from toolkit.cli.flags import from_args

    return from_args(AllocateSettings, args)


def _fmt_params(n: int) -> str:
    return f"{n:,}"


def _print_allocation(a, detail: bool) -> None:
    from toolkit.calculator.architectures import COMPONENTS
    from toolkit.calculator.checks import budget_flag

    head = f"{a.model} ({a.family}) · mode {a.mode} · ratio {':'.join(f'{w:g}' for w in a.ratio)}"
    print(head + (f" · rounding {a.rounding}" if a.mode != "audit" else ""))
    if a.budget is not None:
        flag = budget_flag(a.budget_error)
        print(f"budget {_fmt_params(a.budget)} params ({a.budget_spec}) · allocated {_fmt_params(a.total)} "
              f"· error {a.budget_error:+.2f}%" + (f"  !! {flag} (sweeps refuse this arm)" if flag else ""))
    else:
        print(f"allocated {_fmt_params(a.total)} params")
    print(f"achieved ratio {':'.join(f'{w:g}' for w in a.achieved_ratio)} (mean ranks {a.ranks_label()})")
    print(f"{'component':<10} {'rank':>6} {'mean rank':>10} {'alpha':>7} {'modules':>8} {'params':>14} "
          f"{'budget %':>9} {'model %':>8}")
    for c in COMPONENTS:
        x = a.components[c]
        rank = "full" if x.full else x.rank
        print(f"{c:<10} {rank:>6} {x.mean_rank:>10.3f} {x.alpha:>7g} {x.modules:>8} {_fmt_params(x.params):>14} "
              f"{100 * x.share_of_budget:>8.1f}% {100 * x.share_of_model:>7.1f}%")
    for w in a.warnings:
        print(f"warning: {w}")
    if detail:
        print(f"\n{'module':<72} {'in':>6} {'out':>6} {'rank':>5} {'params':>11}")
        for m in a.modules:
            flag = " capped" if m.capped else (" full fine-tuning" if m.full else "")
            print(f"{m.name:<72} {m.in_features:>6} {m.out_features:>6} {m.rank:>5} {_fmt_params(m.params):>11}{flag}")


def cmd_allocate(args) -> int:
    from toolkit.calculator.loraconfig import lora_config_json, lora_config_snippet

    settings = settings_from_args(args)
    structure = settings.load_structure()
    a = settings.allocation(structure)
    verified = None
    if args.verify:
        from toolkit.calculator.loraconfig import peft_trainable_count

        verified = peft_trainable_count(structure, a)
        if verified != a.total:
            raise RuntimeError(f"PEFT counts {verified:,} trainable params, the calculator {a.total:,}")
    if args.output:
        out = Path(args.output)
        try:
            out.write_text(lora_config_json(a) + "\n")
        except OSError as exc:
            raise InputError(f"output: cannot write '{out}' ({exc.strerror})") from None
    if args.json:
        doc = a.to_dict(with_modules=args.detail)
        if verified is not None:
            doc["peft_trainable_params"] = verified
        print(json.dumps(doc, indent=2))
    elif args.snippet:
        print(lora_config_snippet(a))
    else:
        _print_allocation(a, args.detail)
        if verified is not None:
            print(f"PEFT confirms: get_peft_model on {a.model} has {verified:,} trainable parameters")
        if args.output:
            print(f"LoraConfig written to {args.output}")
    return 0


def cmd_presets(args) -> int:
    from toolkit.calculator.structure import presets

    table = presets()
    if args.json:
        print(json.dumps(table, indent=2))
    else:
        for name, entry in table.items():
            print(f"{name:<24} {entry.get('hub_id') or '-':<38} {entry['description']}")
    return 0


def register(sub) -> None:
    from toolkit.calculator.settings import AllocateSettings
    from toolkit.cli.flags import add_flags

    p = sub.add_parser("allocate", help="per-module LoRA ranks for a ratio at a fixed budget",
                       description="Split a LoRA parameter budget between vision, projector and language.")
    add_flags(p, AllocateSettings)
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="print one JSON object (includes lora_config)")
    g.add_argument("--detail", action="store_true", help="per-module table (or module_detail in --json)")
    g.add_argument("--snippet", action="store_true", help="print a copyable Python LoraConfig snippet")
    g.add_argument("--output", metavar="FILE", help="write the LoraConfig JSON (peft.LoraConfig(**json) accepts it)")
    g.add_argument("--verify", action="store_true",
                   help="apply the LoraConfig with PEFT to the model built on the meta device and compare counts")
    p.set_defaults(func=cmd_allocate)

    p = sub.add_parser("presets", help="list bundled model presets (configs only)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_presets)

