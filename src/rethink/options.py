"""Command-line options generated from a config dataclass: each field is its own option.

A field's metadata says how it appears on the command line (all keys optional):

- ``flag``: the option's name without ``--`` (default: the field's name, dashed); ``None``
  for a field that is not an option;
- ``help`` (the default is appended unless the help names it), ``metavar``, ``group`` (the
  help section it is listed under);
- ``choices``: the allowed values, listed in the help (the config's ``validate()`` checks them,
  so a bad value gets the same message from the command line and from the API);
- ``parse``: the text-to-value function (default: from the field's type);
- ``cli_default``: the option's default where it differs from the field's (``precision``'s
  ``auto`` is resolved per machine before a config is made).

So adding an option is adding a field: `add_options` builds the parser's options,
`values_from_args` reads them back, and `to_argv` writes the command line of a config.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any


def option(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field with a default and its command-line metadata (see the module docs)."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


# ---------------------------------------------------------------------------- value parsers


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _bounded(parse: Callable[[str], Any], test: Callable[[Any], bool], words: str) -> Callable[[str], Any]:
    """`parse`, then refuse a value failing `test` (nan fails every test) as 'VALUE must be WORDS'."""

    def parse_bounded(text: str) -> Any:
        value = parse(text)
        if not test(value):
            raise argparse.ArgumentTypeError(f"{value} must be {words}")
        return value

    return parse_bounded


positive_int = _bounded(integer, lambda v: v > 0, "positive")
non_negative_int = _bounded(integer, lambda v: v >= 0, ">= 0")
positive_number = _bounded(number, lambda v: v > 0, "positive")
non_negative_number = _bounded(number, lambda v: v >= 0, ">= 0")


def names(text: str) -> tuple[str, ...]:
    """A comma list: 'crop, flip' -> ('crop', 'flip'); '' -> ()."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


def integers(text: str) -> tuple[int, ...]:
    """A comma list of integers: '100,500' -> (100, 500)."""
    try:
        return tuple(int(t) for t in names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integers") from None


def numbers(text: str) -> tuple[float, ...]:
    """A comma list of numbers: '0.5,1,2' -> (0.5, 1.0, 2.0)."""
    try:
        return tuple(float(t) for t in names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of numbers") from None


def stack_choice(text: str) -> str | int:
    """--stack: 'auto', 'off' or a number of runs (>= 2)."""
    if text in ("auto", "off"):
        return text
    value = integer(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"{value} runs is not a stack (pass auto, off or 2 or more)")
    return value


def word_or(word: str, parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`word` means None (e.g. 'epoch' for a period of one epoch), anything else `parse`s."""

    def parse_or_none(text: str) -> Any:
        return None if text == word else parse(text)

    parse_or_none.none_word = word  # type: ignore[attr-defined]  # read back by to_argv
    return parse_or_none


_PARSE_BY_TYPE: dict[type, Callable[[str], Any]] = {int: integer, float: number, str: str, tuple: names}


# ---------------------------------------------------------------------------- fields <-> options


def flag(cls: type, name: str) -> str | None:
    """The option (without --) that sets field `name` of `cls`; None for a field that is not one."""
    return cls.__dataclass_fields__[name].metadata.get("flag", name.replace("_", "-"))


def option_fields(cls: type, only: Iterable[str] | None = None) -> list[dataclasses.Field]:
    wanted = None if only is None else set(only)
    return [f for f in dataclasses.fields(cls)
            if flag(cls, f.name) is not None and (wanted is None or f.name in wanted)]


def _field_type(cls: type, name: str) -> type:
    """The field's type without `| None`: int, float, str, bool or tuple."""
    hint = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
    return typing.get_origin(base) or base


def _parser_of(cls: type, field: dataclasses.Field) -> Callable[[str], Any]:
    return field.metadata.get("parse") or _PARSE_BY_TYPE[_field_type(cls, field.name)]


def add_options(parser: argparse.ArgumentParser, cls: type, *, only: Iterable[str] | None = None,
                defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """Add one option per field of `cls` (or the fields in `only`) to `parser`, in field order,
    under the help section of the field's ``group``; `defaults` overrides option defaults.
    Returns the help sections by title, for the command's own options."""
    defaults = defaults or {}
    groups: dict[str, Any] = {}
    for field in option_fields(cls, only):
        meta = field.metadata
        title = meta.get("group")
        if title is not None and title not in groups:
            groups[title] = parser.add_argument_group(title)
        target = groups.get(title, parser)
        default = defaults.get(field.name, meta.get("cli_default", field.default))
        help_text = meta.get("help", "")
        if "choices" in meta:
            help_text += f" (one of {', '.join(meta['choices'])})"
        if "default" not in help_text and default not in (None, False, ()):
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            help_text += f" (default: {shown})"
        kwargs: dict[str, Any] = {"dest": field.name, "default": default, "help": help_text}
        if _field_type(cls, field.name) is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _parser_of(cls, field)
            if "metavar" in meta:
                kwargs["metavar"] = meta["metavar"]
        target.add_argument(f"--{flag(cls, field.name)}", **kwargs)
    return groups


def values_from_args(cls: type, args: argparse.Namespace,
                     only: Iterable[str] | None = None) -> dict[str, Any]:
    """The option values parsed by `add_options`, keyed by field name (ready for ``cls(**...)``)."""
    return {f.name: getattr(args, f.name) for f in option_fields(cls, only)}


def to_argv(config: Any) -> list[str]:
    """The command-line options that give back `config` through `add_options` (every option
    field, so the result does not depend on option defaults)."""
    cls = type(config)
    argv: list[str] = []
    for field in option_fields(cls):
        value, option_name = getattr(config, field.name), f"--{flag(cls, field.name)}"
        kind = _field_type(cls, field.name)
        if kind is bool:
            argv.append(option_name if value else f"--no-{flag(cls, field.name)}")
        elif value is None:
            word = getattr(_parser_of(cls, field), "none_word", None)
            if word is not None:
                argv += [option_name, word]
            elif field.metadata.get("cli_default", field.default) is not None:
                raise ValueError(f"{field.name}=None cannot be written on the command line")
        elif kind is tuple:
            argv.append(f"{option_name}={','.join(map(str, value))}")  # '=': an empty list stays one argument
        else:
            argv.append(f"{option_name}={value!r}" if kind is float else f"{option_name}={value}")
    return argv


# ---------------------------------------------------------------------------- negative numbers

_NEGATIVE_NUMBER = ("-inf", "-infinity", "-nan")


def join_negative_values(argv: list[str]) -> list[str]:
    """`--lr -1e-4` -> `--lr=-1e-4`. argparse reads a value that starts with '-' and is not a plain
    number (-1e-4, -inf) as an option ("expected one argument"); joined, it reaches the option's
    own check, which names the problem."""
    out: list[str] = []
    for item in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and _is_negative_number(item):
            out[-1] = f"{out[-1]}={item}"
        else:
            out.append(item)
    return out


def _is_negative_number(text: str) -> bool:
    if not text.startswith("-") or text.startswith("--"):
        return False
    if text.lower() in _NEGATIVE_NUMBER:
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True
