"""Command-line flags derived from the settings tree (toolkit/fields.py, toolkit/training/settings.py), defined once.

    add_flags(parser, TrainSettings)                   # one flag per field: name, help, default, metavar
    add_flags(parser, SweepSettings)                   # a sweep's own options (toolkit/study/settings.py)
    settings = from_args(TrainSettings, args)          # the flags given (+ --settings-json) -> the settings
    given = values_from_args(TrainSettings, args)      # {field: text} of the flags given, for a sweep's jobs

Every flag's default is None ("not given"), so the settings apply their own default and their own checks: a
value is validated the same way whether it came from `allocate`, `train`, `sweep`, `evaluate`, the app or a queued
job's JSON (that is also why exclusive flags such as --max-steps / --epochs are no argparse group: the settings
refuse both with their own message, `toolkit.fields.check_exclusive`). The help text is the field's doc string
plus its default and allowed values; a field's `aliases` are more flags of it (`--ratio` for a sweep's `--ratios`).
"""

from __future__ import annotations

import argparse

from toolkit.errors import InputError
from toolkit.fields import Setting, settings_fields

SECTIONS = ("model and allocation", "what to evaluate", "data", "training", "generation", "output")
"""the order of the --help sections (each group of the settings tree names its section); sections not named here
(a sweep's axes, queueing, ...) follow in the order their fields come"""


def number(kind):
    """An argparse `type` for int or float flags whose error names the value: "'x' is not a whole number"."""
    def parse(text):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a {'whole number' if kind is int else 'number'}") from None
    return parse


def _default_text(f: Setting) -> str:
    if f.default in (None, "", False, {}, []) or f.kind == "bool":
        return ""
    return f" (default {f.default:g})" if isinstance(f.default, float) else f" (default {f.default})"


def help_text(f: Setting) -> str:
    """A field's --help line: its doc string, default and allowed values."""
    allowed = f" (one of {', '.join(f.choices)})" if f.choices and not all(c in f.doc for c in f.choices) else ""
    return f.doc + allowed + _default_text(f)


def add_flag(group, f: Setting, *, help: str | None = None) -> None:
    """The argparse option of field `f` (its flag and aliases, dest the field's name, default None) in `group`;
    `help` replaces the field's help line (a sweep offers `train`'s --audit only to say why it refuses it)."""
    kwargs = {"dest": f.name, "default": None, "help": (help_text(f) if help is None else help).replace("%", "%%")}
    if f.kind == "bool":  # argparse formats help: a '%' in a doc is written '%%'
        kwargs["action"] = "store_false" if f.flag.startswith("--no-") else "store_true"
    else:
        kwargs["metavar"] = f.metavar or {"int": "N", "float": "X"}.get(f.kind, f.name.upper())
    group.add_argument(f.flag, *f.aliases, **kwargs)


def _order(f: Setting) -> int:
    return SECTIONS.index(f.section) if f.section in SECTIONS else len(SECTIONS)  # others: as they come (stable)


def add_flags(parser: argparse.ArgumentParser, cls, *, exclude=(), title: str = "{}") -> dict:
    """One argparse option per field of `cls` (but `exclude`), in argument groups named by the fields' sections;
    returns {section: argument group}, so a command can add its own options (--dry-run, --json) to one."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in sorted(settings_fields(cls), key=_order):
        if f.name in exclude:
            continue
        group = groups.get(f.section) or groups.setdefault(f.section, parser.add_argument_group(title.format(f.section)))
        add_flag(group, f)
    return groups


def values_from_args(cls, args: argparse.Namespace, *, exclude=(), empty_ok: bool = False) -> dict:
    """{field: value} of the flags of `cls` given on the command line (None = not given). A flag given with an
    empty value (`--name ''`, an unset shell variable) is refused: in a form an empty box means the default, on a
    command line it is more often a mistake than a wish, and leaving the flag out says the same. `empty_ok`
    passes empty values on instead, for options whose reader gives '' a meaning of its own (a sweep's, which
    read '' as not given, as they did before they were fields)."""
    out = {f.name: getattr(args, f.name) for f in settings_fields(cls)
           if f.name not in exclude and getattr(args, f.name, None) is not None}
    for name, value in out.items() if not empty_ok else ():
        if isinstance(value, str) and not value.strip():
            raise InputError(f"{name}: empty; give a value, or leave --{name.replace('_', '-')} out for the default")
    return out


def add_settings_json(parser: argparse.ArgumentParser, cls) -> None:
    parser.add_argument("--settings-json", metavar="JSON|FILE",
                        help=f"all settings as one JSON object of {cls.__name__} fields (inline or a file), as a "
                             "queued job stores them; flags given as well override its fields")


def from_args(cls, args: argparse.Namespace):
    """The settings from `--settings-json` (if given) updated with the flags given; they validate themselves."""
    values = {}
    if getattr(args, "settings_json", None):
        values = cls.from_json(args.settings_json).to_dict()
    values.update(values_from_args(cls, args))
    return cls.from_dict(values)
