"""Command-line options generated from a flat config dataclass: one ``--field-name`` per field.

Each option's type, choices and help come from the field: its type hint, its ``setting(help=...)``
and its default, shown as ``(default: ...)``; the option holds no default of its own, so that an
option not given leaves the dataclass default. Lists are comma-separated (``--feature-dims
64,64,32,64,64``), booleans come as ``--flag`` / ``--no-flag``. :func:`config_from_arguments` builds
the config through :func:`astra.config.build_config`, whose errors name the option::

    add_config_arguments(parser, SimulatorConfig, names={"num_games": "games"})
    config = config_from_arguments(SimulatorConfig, parser.parse_args(), names={"num_games": "games"})
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from astra.config import Bounds, build_config

T = TypeVar("T")
ArgumentGroup = argparse.ArgumentParser | argparse._ArgumentGroup


def add_config_arguments(
    parser: ArgumentGroup,
    cls: type,
    *,
    prefix: str = "",
    names: Mapping[str, str] | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Add one option per field of ``cls`` to ``parser``: ``--{prefix}{name}``, where ``name`` is
    ``names[field]`` or the field's name with dashes.

    ``groups`` maps an argument-group title to the fields it lists, in order; other fields are
    added to ``parser`` itself, first.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    grouped = [name for members in (groups or {}).values() for name in members]
    unknown = sorted(set(grouped) - set(fields))
    if unknown:
        raise ValueError(f"{cls.__name__} has no field {unknown[0]!r} to put in an argument group")
    hints = typing.get_type_hints(cls)
    options = option_names(cls, prefix=prefix, names=names)
    for name in (n for n in fields if n not in grouped):
        _add_option(parser, fields[name], hints[name], options[name], _dest(prefix, name))
    for title, members in (groups or {}).items():
        group = parser.add_argument_group(title)
        for name in members:
            _add_option(group, fields[name], hints[name], options[name], _dest(prefix, name))


def config_from_arguments(
    cls: type[T], args: argparse.Namespace, *, prefix: str = "", names: Mapping[str, str] | None = None
) -> T:
    """The ``cls`` that the options of :func:`add_config_arguments` describe (same ``prefix`` and
    ``names``): the dataclass defaults, with the options given. A :class:`~astra.config.ConfigError`
    names the option at fault."""
    given = {
        f.name: getattr(args, _dest(prefix, f.name))
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if hasattr(args, _dest(prefix, f.name))
    }
    return build_config(cls, given, names=option_names(cls, prefix=prefix, names=names))


def option_names(cls: type, *, prefix: str = "", names: Mapping[str, str] | None = None) -> dict[str, str]:
    """Field name -> its option (``"--games"``); a boolean field's option is its ``--flag`` form."""
    names = names or {}
    return {
        f.name: f"--{prefix}{names.get(f.name, f.name.replace('_', '-'))}" for f in dataclasses.fields(cls)
    }


def _dest(prefix: str, name: str) -> str:
    return f"{prefix.replace('-', '_')}{name}"


def _add_option(parser: ArgumentGroup, f: dataclasses.Field, hint: Any, option: str, dest: str) -> None:
    bounds: Bounds = f.metadata.get("bounds") or Bounds()
    text = f.metadata.get("help", "").replace("%", "%%")
    kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS}
    if hint is bool:
        shown = "on" if f.default else "off"
        parser.add_argument(
            option, action=argparse.BooleanOptionalAction, help=f"{text} (default: {shown})", **kwargs
        )
        return
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        kwargs.update(choices=choices, type=type(choices[0]))
    elif typing.get_origin(hint) is tuple:
        item_type = typing.get_args(hint)[0]
        kwargs.update(type=_list_parser(item_type), metavar=_list_metavar(item_type, bounds))
    else:
        kwargs.update(type=_parser(hint), metavar=_METAVARS.get(hint, "VALUE"))
    limits = _limits(bounds, each=typing.get_origin(hint) is tuple)
    default = _shown(f.default).replace("%", "%%")
    parser.add_argument(option, help=f"{text} (default: {default}{limits})", **kwargs)


_METAVARS: dict[Any, str] = {int: "N", float: "X", str: "TEXT"}


def _parser(hint: Any) -> Callable[[str], Any]:
    """The text -> value function of a scalar type, refusing text that is not one."""
    expected = {int: "a whole number", float: "a number", str: "text"}
    if hint not in expected:
        raise TypeError(f"no command-line option for fields of type {hint!r}")

    def parse(text: str) -> Any:
        try:
            return hint(text.strip()) if hint is not str else text
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected[hint]}, got {text!r}") from None

    return parse


def _list_parser(item_type: Any) -> Callable[[str], tuple[Any, ...]]:
    """Comma-separated text -> a tuple of ``item_type``; empty text is the empty list."""
    parse_item = _parser(item_type)

    def parse(text: str) -> tuple[Any, ...]:
        if not text.strip():
            return ()
        try:
            return tuple(parse_item(part) for part in text.split(","))
        except argparse.ArgumentTypeError as error:
            raise argparse.ArgumentTypeError(f"{error} in {text!r} (values separated by commas)") from None

    return parse


def _list_metavar(item_type: Any, bounds: Bounds) -> str:
    item = _METAVARS.get(item_type, "VALUE")
    if bounds.min_length is not None and bounds.min_length == bounds.max_length:
        return ",".join([item] * bounds.min_length)
    return f"{item},{item},..."


def _limits(bounds: Bounds, *, each: bool) -> str:
    """``"; >= 1"`` (``"; each >= 1"`` for a list), or nothing for an unbounded setting."""
    if (bounds.ge, bounds.gt, bounds.le, bounds.lt) == (None, None, None, None):
        return ""
    return f"; {'each ' if each else ''}{bounds.describe()}"


def _shown(value: Any) -> str:
    """A default as the option would spell it: lists comma-separated, text quoted when empty."""
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    if value == "":
        return '""'
    return str(value)
