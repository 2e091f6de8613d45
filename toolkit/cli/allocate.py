"""`python -m toolkit allocate` and `presets`: the budget calculator on the command line.

    python -m toolkit allocate --model llava-1.5-7b --ratio 1:4:1 --budget-rank 8
    python -m toolkit allocate --model llava-1.5-7b --ratio 1:4:1 --budget-rank 8 --json
    python -m toolkit allocate --model llava-1.5-7b --audit 4:16:4 --budget-rank 8
    python -m toolkit allocate --model llava-1.5-7b --ratio 1:4:1 --budget-rank 8 --rounding uniform   # 8:32:8
    python -m toolkit allocate --model llava-1.5-7b --ratio 1:1:1 --budget-rank 16 --full-finetune projector
    python -m toolkit presets

The allocation flags (`add_allocation_flags`) are shared with `train` and `sweep`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from toolkit.errors import InputError


def add_allocation_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="preset name, local folder with config.json, or Hub id")
    p.add_argument("--revision", help="Hub revision when --model is a Hub id")
    p.add_argument("--ratio", help="vision:projector:language weights, e.g. 1:4:1 (0 leaves a component out)")
    p.add_argument("--mode", default="rank", help="rank (ranks follow the ratio, default) or share (budget shares do)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--budget-rank", metavar="R", help="budget = uniform rank R on every targeted module")
    budget.add_argument("--budget-params", metavar="N", help="budget in trainable parameters")
    budget.add_argument("--budget-percent", metavar="P", help="budget as a percentage of the base model's parameters")
    p.add_argument("--targets", default="", help="module kinds per component, e.g. language=attention,vision=mlp "
                   "(kinds: all, attention, mlp; default all)")
    p.add_argument("--alpha-rule", default="scaled", help="scaled (alpha = k*r, default), fixed, or rslora")
    p.add_argument("--alpha", default="2", help="k for scaled (default 2), alpha itself for fixed/rslora")
    p.add_argument("--patterns", help="component regexes for unknown families: 'vision=RE;projector=RE;language=RE'")
    p.add_argument("--rounding", default="mixed",
                   help="mixed (default: per-module floor/ceil ranks, budget-exact) or uniform (one integer rank "
                        "per component)")
    p.add_argument("--full-finetune", default="", metavar="COMPONENTS",
                   help="components to train fully (PEFT modules_to_save), e.g. projector; their true cost is "
                        "paid from the same budget")


def _budget_from(args):
    from toolkit.calculator.spec import Budget

    for kind in ("rank", "params", "percent"):
        value = getattr(args, f"budget_{kind}")
        if value is not None:
            return Budget.parse(kind, value)
    return None


def allocation_request(args):
    """(spec or None, audit ranks or None, targets, alpha, patterns) from the allocation flags."""
    from toolkit.calculator.architectures import ComponentPatterns
    from toolkit.calculator.spec import AllocationSpec, AlphaRule, Ratio, Targets, parse_ranks
    from toolkit.calculator.spec import parse_number as number

    targets = Targets.parse(args.targets)
    alpha = AlphaRule(args.alpha_rule, number(args.alpha, "alpha", "a number > 0"))
    budget = _budget_from(args)
    patterns = ComponentPatterns.parse(args.patterns) if args.patterns else None
    if getattr(args, "audit", None):
        return None, parse_ranks(args.audit, "audit"), targets, alpha, patterns, budget
    if not args.ratio:
        raise InputError("ratio: required, e.g. --ratio 1:4:1 (or use --audit V:P:L for explicit ranks)")
    ratio = Ratio.parse(args.ratio)
    if budget is None:
        raise InputError("budget: give one of --budget-rank R, --budget-params N, --budget-percent P")
    spec = AllocationSpec(ratio=ratio, budget=budget, mode=args.mode, targets=targets, alpha=alpha,
                          rounding=getattr(args, "rounding", "mixed"), full_finetune=getattr(args, "full_finetune", ""))
    return spec, None, targets, alpha, patterns, budget


def build_allocation(args, *, with_structure: bool = False):
    """Allocation (or audit) from parsed allocation flags; shared by commands that train.

    Returns the allocation, or (allocation, structure) with `with_structure=True`.
    """
    from toolkit.calculator.allocation import allocate, audit
    from toolkit.calculator.structure import load_structure

    spec, ranks, targets, alpha, patterns, budget = allocation_request(args)
    structure = load_structure(args.model, patterns=patterns, revision=args.revision)
    if ranks is not None:
        a = audit(structure, ranks, budget=budget, targets=targets, alpha=alpha)
    else:
        a = allocate(structure, spec)
    return (a, structure) if with_structure else a


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

    a, structure = build_allocation(args, with_structure=True)
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
    p = sub.add_parser("allocate", help="per-module LoRA ranks for a ratio at a fixed budget",
                       description="Split a LoRA parameter budget between vision, projector and language.")
    add_allocation_flags(p)
    p.add_argument("--audit", metavar="V:P:L", help="explicit ranks to audit instead of solving, e.g. 4:16:4")
    p.add_argument("--json", action="store_true", help="print one JSON object (includes lora_config)")
    p.add_argument("--detail", action="store_true", help="per-module table (or module_detail in --json)")
    p.add_argument("--snippet", action="store_true", help="print a copyable Python LoraConfig snippet")
    p.add_argument("--output", metavar="FILE", help="write the LoraConfig JSON (peft.LoraConfig(**json) accepts it)")
    p.add_argument("--verify", action="store_true",
                   help="apply the LoraConfig with PEFT to the model built on the meta device and compare counts")
    p.set_defaults(func=cmd_allocate)

    p = sub.add_parser("presets", help="list bundled model presets (configs only)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_presets)

