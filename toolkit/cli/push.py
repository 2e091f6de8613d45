"""`python -m toolkit push`: publish an adapter folder to the Hugging Face Hub (see toolkit/publish.py).

    python -m toolkit push --adapter adapters/llava-1-4-1-s0 --repo-id alice/llava-1-4-1 --dry-run
    HF_TOKEN=hf_... python -m toolkit push --adapter llava-1-4-1-s0 --repo-id alice/llava-1-4-1 --license apache-2.0
    python -m toolkit push --adapter llava-1-4-1-s0 --repo-id alice/llava-1-4-1 --public   # private by default

The token is read from HF_TOKEN or the huggingface_hub login (`hf auth login`), never from the command line
(where shell history and `ps` would keep it).
"""

from __future__ import annotations

import json
import os
import sys


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def _size(n: int) -> str:
    return f"{n:,} B" if n < 1024 else f"{n / 1024:,.1f} KiB" if n < 1024**2 else f"{n / 1024**2:,.1f} MiB"


def cmd_push(args) -> int:
    from toolkit.hub.publish import DEFAULT_ENDPOINT, dry_run, push, validate_repo_id
    from toolkit.progressbar import Bar

    repo_id = validate_repo_id(args.repo_id)
    endpoint = args.endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    if args.dry_run:
        plan = dry_run(args.adapter, repo_id=repo_id, license=args.license)
        if args.json:
            _out(json.dumps({"dry_run": True, "private": args.private, "endpoint": endpoint, **plan.to_dict()}, indent=2))
            return 0
        _out(f"dry run: would push {plan.adapter_dir} to {endpoint}/{repo_id} "
             f"({'private' if args.private else 'public'}) in one commit")
        for f in plan.files:
            _out(f"  {f.path_in_repo:<60} {_size(f.size):>12}")
        for path, reason in plan.skipped:
            _out(f"  skipped {path}: {reason}")
        _out(f"\n--- README.md (model card) ---\n{plan.card}")
        return 0

    # a bar on a terminal, a line per stage otherwise ("[ 25%] uploading 6 files ...")
    with Bar(total=100, desc="push", unit="%", every=None, every_s=0, log=_err if not args.json else lambda m: None,
             line=lambda done, _, postfix: f"[{done:3.0f}%] {postfix.get('stage', '')}") as bar:
        result = push(args.adapter, repo_id, private=args.private, license=args.license, endpoint=endpoint,
                      progress=lambda fraction, message: bar.update(100 * fraction - bar.done, stage=message))
    if args.json:
        _out(json.dumps(result.to_dict(), indent=2))
    else:
        visibility = "private" if result.private else "public"
        _out(f"published {result.url} ({visibility})" if result.changed
             else f"nothing new: {result.url} ({visibility}) already holds these files")
        _out(f"commit {result.commit}")
        for line in result.checks:
            _out(f"  verified {line}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("push", help="publish an adapter to the Hugging Face Hub (one commit, verified)",
                       description="Create or reuse a Hub model repo and upload an adapter folder (PEFT files, "
                                   "model card, cmba.json, evaluation results) in one commit. Token: HF_TOKEN or "
                                   "`hf auth login`.")
    p.add_argument("--adapter", required=True, metavar="DIR", help="adapter folder, or its name in the adapters dir")
    p.add_argument("--repo-id", required=True, metavar="NS/NAME", help="Hub repo id, e.g. alice/llava-1-4-1")
    vis = p.add_mutually_exclusive_group()
    vis.add_argument("--private", dest="private", action="store_true", default=True,
                     help="create a private repo (the default, as in the app; an existing repo must match)")
    vis.add_argument("--public", dest="private", action="store_false", help="create a public repo instead")
    p.add_argument("--license", help="Hub license id for the card, e.g. apache-2.0, mit, llama3 (default: none)")
    p.add_argument("--dry-run", action="store_true", help="render the card and list the files; no network")
    p.add_argument("--endpoint", metavar="URL", help="Hub endpoint (default: HF_ENDPOINT or https://huggingface.co)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_push)
