"""Command line: `python -m toolkit <command>` (see `--help` of each command); one module per command.

    python -m toolkit allocate --model llava-1.5-7b --ratio 1:4:1 --budget-rank 8     # toolkit/cli/allocate.py
    python -m toolkit train --model demo --dataset synthetic:shapes --ratio 1:4:1      # toolkit/cli/train.py
    python -m toolkit sweep ...                                                        # toolkit/cli/sweep.py
    python -m toolkit jobs ... | worker                                                # toolkit/cli/jobs.py
    python -m toolkit evaluate ... | score ... | compare ... | push ...

    allocate.py     `allocate`: the calculator's allocation of a budget (and `--json`)
    train.py        `train`: one allocation trained into an adapter folder
    evaluate.py     `evaluate`: VQA accuracy of an adapter or of the base model on a split
    compare.py      `score` (VQA accuracy of given predictions) and `compare` (the study's statistics and verdict)
    push.py         `push`: publish an adapter to the Hugging Face Hub
    sweep.py        `sweep`: plan and queue ratios x seeds x budgets (designs, halving searches, --pack)
    pack.py         `pack`: a pack of arms trained in one process on one base, then each evaluated there
    jobs.py         `jobs list|show|cancel|retry|logs` and `worker`
    study.py        `study`, `search`, `confirm` and `retrieval`: a study's answer, a search, its confirmation, alignment
    export.py       `export`: an adapter merged into its base for evaluation harnesses
    import_eval.py  `import-eval`: lmms-eval's per-sample outputs stored as an evaluation of an adapter
    flags.py        command-line flags derived from the settings tree (toolkit/fields.py), defined once

Bad input exits with status 2 and one line on stderr: `error: <field>: <what is allowed>`. Nothing escapes as a
traceback: a busy job store is one line too (exit 2), and an unexpected exception is one `error: internal: ...`
line (exit 1; `CMBA_DEBUG=1` prints its traceback).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sqlite3
import sys

from toolkit.errors import CmbaError, InputError, redact
from toolkit.outcomes import ExitCode, Interrupted

# Modules that add their own commands: each has `register(subparsers)`, which adds parsers whose
# `func(args) -> int` runs the command. Heavy imports (torch, transformers) stay inside those functions
# so `--help` and bad-input errors stay fast.
COMMAND_MODULES: list[str] = ["toolkit.cli.allocate", "toolkit.cli.train", "toolkit.cli.evaluate", "toolkit.cli.compare", "toolkit.cli.push", "toolkit.cli.sweep", "toolkit.cli.jobs",
                            "toolkit.cli.study", "toolkit.cli.export", "toolkit.cli.import_eval", "toolkit.cli.pack"]


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line like every other error."""

    def error(self, message):  # noqa: D401 - argparse API
        raise InputError(f"{self.prog.split()[-1]}: {message}")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m toolkit", description="CMBA Toolkit: cross-modal LoRA budget allocation for VLMs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except Interrupted as exc:  # a checkpoint was saved: not an error, `--resume` continues
        print(f"stopped: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except CmbaError as exc:  # bad input, and out of memory (`error: out_of_memory: ...`, the marker the worker reads)
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return getattr(exc, "exit_code", ExitCode.BAD_INPUT)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return ExitCode.KEYBOARD_INTERRUPT
    except BrokenPipeError:  # `... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except sqlite3.OperationalError as exc:  # another process holds the store's write lock past every retry
        from toolkit.queue.store import BUSY_TIMEOUT_S, store_busy

        if not store_busy(exc):
            return _internal(exc)
        print(f"error: jobs store: busy ({exc}) after waiting {BUSY_TIMEOUT_S:g} s; another process holds its write "
              "lock, try again", file=sys.stderr)
        return ExitCode.BAD_INPUT
    except OSError as exc:
        if exc.errno not in UNWRITABLE:
            return _internal(exc)
        where = exc.filename or "a file"
        print(f"error: output: cannot write {where}: {exc.strerror or exc} ({errno.errorcode.get(exc.errno, '')}); "
              + ("free some space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "make that folder writable")
              + " and retry (a job resumes from its last checkpoint), or choose another --output", file=sys.stderr)
        return ExitCode.BAD_INPUT
    except MemoryError:
        print("error: out_of_memory: the input asks for more memory than this machine has", file=sys.stderr)
        return ExitCode.OUT_OF_MEMORY
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a bug, reported in one line
        return _internal(exc)


UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT)
"""OSErrors of a folder the run cannot write (read-only, no permission, full): the user's to fix, not a bug"""


def _internal(exc: Exception) -> int:
    if os.environ.get("CMBA_DEBUG"):
        import traceback

        traceback.print_exc()
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    print(f"error: internal: {type(exc).__name__}: {redact(first)} (a bug; CMBA_DEBUG=1 shows the traceback)", file=sys.stderr)
    return ExitCode.FAILURE
