"""The settings machinery: pydantic models whose fields say everything a flag or a form needs, and one-line errors.

    class OptimSettings(Settings):
        section: ClassVar[str] = "training"
        lr: float | None = setting(None, gt=0, lt=1, allowed="a learning rate in (0, 1)")
        \"\"\"learning rate\"\"\"

    OptimSettings(lr="5e-3").lr                   # 0.005: text from flags, forms and JSON is converted
    OptimSettings(lr=1.5)                         # InputError: lr: must be a learning rate in (0, 1), got 1.5
    [s.flag for s in settings_fields(OptimSettings)]      # ['--lr']: toolkit/cli/flags.py adds one flag each
    settings_field(OptimSettings, "lr").upper            # 1: the app's form reads bounds, choices and docs here

Why pydantic (v2): it already does what the toolkit had ~190 lines of its own for: type conversion of text, bounds
(`ge`/`lt`, which stay readable as data for forms), choices (`Literal`), JSON round trips, frozen models, and the
doc string under each field as its description (`use_attribute_docstrings`, which replaced parsing our source with
`ast`). What stays ours is small: the translation of a validation error into the one line the CLI contract asks for
(`error: <field>: <what is allowed>`), and the derivation of flags and form widgets from the fields (litgpt uses
jsonargparse for that; its error messages and flag names are its own, and ours are pinned by tests and by jobs
queued before, so a thin argparse layer over the fields keeps them).

A settings class is a group (`section` names its --help section); groups compose by inheritance into the settings
of a command (`TrainSettings(ModelSettings, AllocationSettings, DataSettings, OptimSettings, OutputSettings)`),
so every leaf name is unique: flags, form keys and the JSON a queued job stores stay flat.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from types import NoneType, UnionType
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from toolkit.errors import InputError

_BOUNDS = ("ge", "gt", "le", "lt")
_CACHE: dict[type, dict] = {}
_DEFAULTS: dict[type, dict] = {}


def setting(default: Any = None, *, factory: Any = None, flag: str | None = None, aliases: tuple[str, ...] = (),
            metavar: str | None = None, allowed: str | None = None, refusal: str | None = None,
            exclusive: str | None = None, **bounds) -> Any:
    """A settings field: its default (the one definition of it), `ge`/`gt`/`le`/`lt` bounds, and how it reads as
    a flag: `flag` (default `--<name>`), `aliases` (more flags for it, e.g. `--ratio` for `--ratios`), `metavar`,
    `allowed` (the error's "must be ..." text when bounds are not enough), `refusal` (the text after a refused
    choice), `exclusive` (at most one field of the group is given)."""
    extra = {k: v for k, v in dict(flag=flag, aliases=list(aliases) or None, metavar=metavar, allowed=allowed,
                                   refusal=refusal, exclusive=exclusive).items() if v is not None}
    if factory is not None:
        return Field(default_factory=factory, json_schema_extra=extra, **bounds)
    return Field(default, json_schema_extra=extra, **bounds)


@dataclass(frozen=True)
class Setting:
    """One field as a flag or a form widget sees it (`settings_fields`)."""

    name: str
    flag: str
    doc: str
    kind: str
    """int, float, str, bool, choice, or value (a type with its own text form: ratio, targets, columns, ...)"""
    optional: bool
    default: Any
    """the default as JSON (None where the model's defaults or another field decide)"""
    choices: tuple = ()
    lower: float | None = None
    upper: float | None = None
    lower_open: bool = False
    upper_open: bool = False
    allowed: str = ""
    metavar: str | None = None
    section: str = ""
    exclusive: str | None = None
    refusal: str | None = None
    aliases: tuple[str, ...] = ()
    """more flags of the field (`--ratio` for `--ratios`)"""

    @property
    def label(self) -> str:
        """The name errors use: the flag without its dashes (`lr-vision`, `group-by-length`)."""
        return self.flag.removeprefix("--no-").removeprefix("--")


def _kind(annotation) -> tuple[str, bool, tuple]:
    """(kind, optional, choices) of a field's annotation."""
    args = typing.get_args(annotation)
    optional = type(annotation) is UnionType or typing.get_origin(annotation) is typing.Union
    if optional:
        rest = [a for a in args if a is not NoneType]
        optional = len(rest) < len(args)
        annotation = rest[0] if len(rest) == 1 else annotation
    if typing.get_origin(annotation) is typing.Literal:
        return "choice", optional, typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        return "value", optional, ()
    return {int: "int", float: "float", str: "str", bool: "bool"}.get(annotation, "value"), optional, ()


def _allowed(kind: str, lo, hi, lo_open: bool, hi_open: bool) -> str:
    noun = "a whole number" if kind == "int" else "a number"
    if lo is not None and hi is not None:
        return f"{noun} in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{noun} {'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{noun} {'<' if hi_open else '<='} {hi:g}"
    return noun


def _section(cls, name: str) -> str:
    for klass in cls.__mro__:
        if name in vars(klass).get("__annotations__", {}):
            return getattr(klass, "section", "")
    return ""


def settings_fields(cls) -> list[Setting]:
    """Every field of a settings class, in definition order, as flags and forms read them."""
    return list(_fields(cls).values())


def settings_field(cls, name: str) -> Setting:
    """One field of a settings class (KeyError for an unknown name)."""
    return _fields(cls)[name]


def _fields(cls) -> dict[str, Setting]:
    if cls in _CACHE:
        return _CACHE[cls]
    defaults = cls.defaults()
    out = {}
    order = [n for klass in cls.__mro__ for n in vars(klass).get("__annotations__", {}) if n in cls.model_fields]
    for name in dict.fromkeys(order):  # the groups in the order they are composed, each in its own order
        info = cls.model_fields[name]
        extra = info.json_schema_extra or {}
        kind, optional, choices = _kind(info.annotation)
        bounds = {type(m).__name__.lower(): getattr(m, type(m).__name__.lower()) for m in info.metadata
                  if type(m).__name__.lower() in _BOUNDS}
        lo = bounds.get("ge", bounds.get("gt"))
        hi = bounds.get("le", bounds.get("lt"))
        flag = extra.get("flag") or "--" + name.replace("_", "-")
        out[name] = Setting(
            name=name, flag=flag, doc=(info.description or "").strip(), kind=kind, optional=optional,
            default=defaults.get(name), choices=choices, lower=lo, upper=hi, lower_open="gt" in bounds,
            upper_open="lt" in bounds, allowed=extra.get("allowed") or _allowed(kind, lo, hi, "gt" in bounds, "lt" in bounds),
            metavar=extra.get("metavar"), section=_section(cls, name), exclusive=extra.get("exclusive"),
            refusal=extra.get("refusal"), aliases=tuple(extra.get("aliases") or ()))
    _CACHE[cls] = out
    return out


def _shown(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def one_line(cls, exc: ValidationError) -> str:
    """The first error of a validation as the CLI contract's line: `<field>: <what is allowed>, got <value>`."""
    err = exc.errors(include_url=False)[0]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, InputError):
        return str(cause)
    loc = str(err["loc"][0]) if err["loc"] else ""
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        known = sorted(cls.model_fields)
        return f"settings: unknown field '{loc}' (fields: {', '.join(known)})"
    if loc not in cls.model_fields:
        return f"settings: {err['msg']}"
    f = settings_field(cls, loc)
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{f.label}: must be {f.allowed}, got {_shown(value)}"
    if kind in ("int_parsing", "int_from_float", "int_type"):
        return f"{f.label}: '{value}' is not a whole number"
    if kind in ("float_parsing", "float_type"):
        return f"{f.label}: '{value}' is not a number ({f.allowed})"
    if kind == "finite_number":
        return f"{f.label}: '{value}' is not a finite number"
    if kind in ("literal_error", "enum"):
        return f"{f.label}: '{value}' " + (f.refusal or f"is not one of {', '.join(map(str, f.choices))}")
    if kind in ("bool_parsing", "bool_type"):
        return f"{f.label}: must be true or false, got {value!r}"
    if kind == "string_type":
        return f"{f.label}: must be text, got {value!r}"
    if kind == "missing":
        return f"{f.label}: required"
    return f"{f.label}: {err['msg']}"



def json_argument(text: str, *, inline: tuple[str, ...] = ("{",)) -> object:
    """A `--settings-json` value: inline JSON (starting with one of `inline`), or the path of a file holding it;
    a one-line InputError naming settings-json when it cannot be read or parsed."""
    from pathlib import Path

    text = str(text).strip()
    if not text.startswith(inline):
        try:
            text = Path(text).expanduser().read_text()
        except OSError as exc:
            raise InputError(f"settings-json: cannot read '{text}' ({exc.strerror or exc})") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InputError(f"settings-json: not valid JSON ({exc})") from None

def check_exclusive(cls, values: dict) -> None:
    """Refuse two fields of one `exclusive` group given (not None) in `values` ({field: value}): the one check of
    exclusive flags (--max-steps / --epochs, the budget flags), for settings objects and for option dicts alike."""
    groups: dict[str, list[Setting]] = {}
    for f in settings_fields(cls):
        if f.exclusive and values.get(f.name) is not None:
            groups.setdefault(f.exclusive, []).append(f)
    for given in groups.values():
        if len(given) > 1:
            raise InputError(f"{given[0].label}: give either {given[0].flag} or {given[1].flag}, not both")


class Settings(BaseModel):
    """A group of settings (or a command's composition of groups): frozen, text converted, one-line errors."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False,
                              arbitrary_types_allowed=True, validate_default=False)
    section: ClassVar[str] = ""
    """the --help section of the fields this class declares"""

    def __init__(self, **data):
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InputError(one_line(type(self), exc)) from None

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data):
        """Text as flags and forms give it: stripped; empty (or None) means the default, or None where optional;
        numbers may be written 1,000 or 1_000."""
        if not isinstance(data, dict):
            raise InputError(f"settings: expected a JSON object of {cls.__name__} fields, got {type(data).__name__}")
        out = {}
        for key, value in data.items():
            info = cls.model_fields.get(key)
            if info is None:
                out[key] = value
                continue
            kind, optional, _ = _kind(info.annotation)
            if isinstance(value, str):
                value = value.strip()
                if kind in ("int", "float"):
                    plain = value.replace("_", "").replace(",", "")
                    try:
                        float(plain)
                        value = plain
                    except ValueError:
                        pass
            if value is None or (value == "" and (kind != "str" or optional)):
                if optional:
                    out[key] = None
                continue  # the default
            out[key] = value
        return cls.resolve(out)

    @classmethod
    def resolve(cls, data: dict) -> dict:
        """Defaults that depend on other fields, filled in before validation (the one place they resolve)."""
        return data

    @model_validator(mode="after")
    def _exclusive(self):
        check_exclusive(type(self), {name: getattr(self, name) for name in type(self).model_fields})
        self.check()
        return self

    def check(self) -> None:
        """Checks across fields, after each field is valid (a composition calls its groups' in its order)."""

    def __eq__(self, other) -> bool:  # the fields alone: not what a settings object has cached
        return type(self) is type(other) and self.__dict__ == other.__dict__

    __hash__ = None  # a settings object holds dicts (columns): like a frozen dataclass with one, unhashable

    # ------------------------------------------------------------------ JSON: what a queued job stores
    def to_dict(self) -> dict:
        """Plain JSON values (text for ratios, targets, columns ...): `from_dict` reads it back."""
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict):
        if not isinstance(data, dict):
            raise InputError(f"settings: expected a JSON object of {cls.__name__} fields, got {type(data).__name__}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str):
        """An inline JSON object, or the path of a file holding one."""
        return cls.from_dict(json_argument(text))

    @classmethod
    def defaults(cls) -> dict:
        """{field: default} in `to_dict` form."""
        if cls not in _DEFAULTS:
            _DEFAULTS[cls] = cls.model_construct().model_dump(mode="json")
        return dict(_DEFAULTS[cls])

    def changed(self) -> dict:
        """The fields that differ from their defaults (what a sweep's id hashes)."""
        defaults = type(self).defaults()
        return {k: v for k, v in self.to_dict().items() if k not in defaults or defaults[k] != v}

    def replace(self, **change):
        """A validated copy with `change` applied (settings are frozen)."""
        return type(self)(**{**self.to_dict(), **change})

    def pick(self, cls):
        """The fields of group `cls` (a base of this class) as that group: `settings.pick(AllocationSettings)`."""
        return cls.model_construct(**{k: getattr(self, k) for k in cls.model_fields})
