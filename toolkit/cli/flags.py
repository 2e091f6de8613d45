"""Command-line flags derived from the settings dataclasses (toolkit/training/settings.py), defined once.

    add_flags(parser, TrainSettings)                   # one flag per field: name, help, default, metavar
    settings = from_args(TrainSettings, args)          # the flags given (+ --settings-json) -> the dataclass
    given = values_from_args(TrainSettings, args)      # {field: text} of the flags given, for a sweep's jobs

Every flag's default is None ("not given"), so the dataclass applies its own default and its own checks: a
value is validated the same way whether it came from `train`, `sweep`, `evaluate`, the app or a queued job's
JSON (that is also why exclusive flags such as --max-steps / --epochs are no argparse group: the dataclass
refuses both with its own message). The help text is the field's doc string plus its default and allowed values.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields

from toolkit.training.settings import GROUP_ORDER, _kind, field_docs, flag_name


def number(kind):
    """An argparse `type` for int or float flags whose error names the value: "'x' is not a whole number"."""
    def parse(text):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a {'whole number' if kind is int else 'number'}") from None
    return parse


def _default_text(f) -> str:
    default = f.default if f.default is not MISSING else f.default_factory() if f.default_factory is not MISSING else None
    text = f.metadata.get("text")
    if default in (None, "", False, {}) or f.type == "bool":
        return ""
    shown = text(default) if text else f"{default:g}" if isinstance(default, float) else str(default)
    return f" (default {shown})" if shown else ""


def help_text(cls, f) -> str:
    """A field's --help line: its doc string, default and allowed values."""
    choices = f.metadata.get("choices")
    doc = field_docs(cls)[f.name]
    allowed = f" (one of {', '.join(choices)})" if choices and not all(c in doc for c in choices) else ""
    return doc + allowed + _default_text(f)


def add_flags(parser: argparse.ArgumentParser, cls, *, exclude=(), title: str = "{}") -> None:
    """One argparse option per field of `cls` (but `exclude`), in argument groups named by the fields' groups."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in sorted(fields(cls), key=lambda f: GROUP_ORDER.index(f.metadata["group"])):
        if f.name in exclude:
            continue
        name = f.metadata["group"]
        group = groups.get(name) or groups.setdefault(name, parser.add_argument_group(title.format(name)))
        kwargs = {"dest": f.name, "default": None, "help": help_text(cls, f).replace("%", "%%")}  # argparse formats help
        if f.type == "bool":
            kwargs["action"] = "store_false" if flag_name(f).startswith("--no-") else "store_true"
        else:
            kwargs["metavar"] = f.metadata.get("metavar") or {"int": "N", "float": "X"}.get(_kind(f), f.name.upper())
        group.add_argument(flag_name(f), **kwargs)


def values_from_args(cls, args: argparse.Namespace, *, exclude=()) -> dict:
    """{field: value} of the flags of `cls` given on the command line (None = not given)."""
    return {f.name: getattr(args, f.name) for f in fields(cls)
            if f.name not in exclude and getattr(args, f.name, None) is not None}


def add_settings_json(parser: argparse.ArgumentParser, cls) -> None:
    parser.add_argument("--settings-json", metavar="JSON|FILE",
                        help=f"all settings as one JSON object of {cls.__name__} fields (inline or a file), as a "
                             "queued job stores them; flags given as well override its fields")


def from_args(cls, args: argparse.Namespace):
    """The dataclass from `--settings-json` (if given) updated with the flags given; it validates itself."""
    values = {}
    if getattr(args, "settings_json", None):
        values = cls.from_json(args.settings_json).to_dict()
    values.update(values_from_args(cls, args))
    return cls.from_dict(values)
