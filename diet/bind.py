"""Bind a config section to a typed options class (a dataclass), torchtune-style: every key must be a field,
every value of the field's type; defaults live in the class, nowhere else."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping, TypeVar

from diet.errors import DietConfigError

T = TypeVar("T")


def _type_ok(value: Any, expected: Any) -> bool:
    origin = typing.get_origin(expected)
    if origin in (list, dict, tuple):
        return isinstance(value, origin)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        return any(_type_ok(value, option) for option in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, expected)


def _type_name(expected: Any) -> str:
    args = typing.get_args(expected)
    if args:
        return " or ".join(_type_name(a) for a in args)
    return "null" if expected is type(None) else {bool: "true or false"}.get(expected, expected.__name__)


def check_names(options_type: type, section: Mapping[str, Any], prefix: str, ignore: tuple[str, ...] = ()) -> None:
    """Refuse a key that is not a field of `options_type`, naming the allowed ones."""
    fields = [f.name for f in dataclasses.fields(options_type)]
    unknown = sorted(set(section) - set(fields) - set(ignore))
    if unknown:
        allowed = ", ".join(f"{prefix}.{name}" for name in fields) or "none"
        raise DietConfigError(f"{prefix}.{unknown[0]} is not an option: allowed {allowed}")


def bind(options_type: type[T], section: Mapping[str, Any], prefix: str, ignore: tuple[str, ...] = ()) -> T:
    """`options_type(**section)` after checking names and values; errors name `prefix.key` and what is allowed.
    A value is checked by its field's `metadata["check"]` (diet/checks.py) where it has one, else by
    the field's type; the class's own checks (its __post_init__) run last."""
    check_names(options_type, section, prefix, ignore)
    hints = typing.get_type_hints(options_type)
    values = {key: section[key] for key in section if key not in ignore}
    checks = {f.name: f.metadata.get("check") for f in dataclasses.fields(options_type)}
    for key, value in values.items():
        if checks[key] is not None:
            checks[key](f"{prefix}.{key}", value)
        elif not _type_ok(value, hints[key]):
            raise DietConfigError(f"{prefix}.{key}={value!r} is not allowed: use {_type_name(hints[key])}")
    return options_type(**values)
