"""`python -m toolkit export`: an adapter merged into its base, for harnesses that load one model path.

    python -m toolkit export --adapter adapters/demo-1-4-1-rank8-s0 --merged exports/demo-1-4-1
    python -m toolkit export --adapter demo-1-4-1-rank8-s0 --merged exports/demo-1-4-1 --dtype fp16 --json

The folder holds the merged weights (safetensors), the processor files, a config that `from_pretrained` loads
as the base family's class, and a README.md with the lmms-eval and VLMEvalKit command lines
(toolkit/interop/export.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def resolve_adapter(text: str) -> str:
    """An adapter folder, or the name of one in the adapter store (as `push` takes it)."""
    from toolkit.paths import adapters_dir

    path = Path(text).expanduser()
    if not path.exists() and not path.is_absolute() and (adapters_dir() / text).is_dir():
        return str(adapters_dir() / text)
    return str(path)


def cmd_export(args) -> int:
    from toolkit.interop.export import export_merged

    result = export_merged(resolve_adapter(args.adapter), args.merged, dtype=args.dtype, overwrite=args.overwrite,
                           log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"exported {result.architecture} ({result.dtype}) to {result.path}")
    command = result.lmms_eval_command()
    print(f"lmms-eval: {command}" if command else f"lmms-eval: no wrapper for {result.model_type} (see README.md)")
    if result.vlmevalkit_class:
        print(f"VLMEvalKit: python run.py --config {result.path}/vlmevalkit.json")
    print(f"more in {result.path}/README.md")
    return 0


def register(sub) -> None:
    from toolkit.interop.export import DTYPES

    p = sub.add_parser("export", help="merge an adapter into its base model (for lmms-eval, VLMEvalKit)",
                       description="Load the base model and the adapter as `evaluate` does, fold the LoRA into the "
                                   "weights with PEFT's merge_and_unload, and save a plain transformers folder "
                                   "(safetensors, processor, config, README.md with the harness commands).")
    p.add_argument("--adapter", required=True, metavar="DIR", help="adapter folder, or its name in the adapters dir")
    p.add_argument("--merged", required=True, metavar="OUT", help="folder to write (new or empty)")
    p.add_argument("--dtype", choices=DTYPES, default="bf16",
                   help="weights saved as (default bf16; fp32 to check the merge exactly)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it is not empty")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_export)
