"""Value checks shared by the typed sections and the whole-config validation; each failure names the option,
the bad value and what is allowed."""

from __future__ import annotations

import math
from typing import Any, Callable

from diet.errors import DietConfigError
from diet.registry import unknown_name_message

Check = Callable[[str, Any], None]  # (option path, value) -> raises DietConfigError


def number_in(name: str, value: Any, low: float, high: float, low_open: bool, high_open: bool) -> float:
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise DietConfigError(f"{name}={value!r} is not a number: allowed {interval}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        raise DietConfigError(f"{name}={value!r} is outside the allowed range {interval}")
    return float(value)


def positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        allowed = "an integer >= 1" + (" or null" if allow_none else "")
        raise DietConfigError(f"{name}={value!r} is not allowed: use {allowed}")


def flag(name: str, value: Any) -> None:
    # 'no' or 0 from the command line would otherwise be truthy/falsy by accident
    if not isinstance(value, bool):
        raise DietConfigError(f"{name}={value!r} is not allowed: use true or false")


def choice(name: str, value: Any, allowed: list[str] | tuple[str, ...]) -> None:
    if value not in allowed:
        raise DietConfigError(unknown_name_message(name, value, list(allowed)))


# ------------------------------------------------------------------ field checks, for `field(metadata=...)`

def in_range(low: float, high: float, low_open: bool, high_open: bool) -> dict[str, Check]:
    def check(name: str, value: Any) -> None:
        number_in(name, value, low, high, low_open, high_open)

    return {"check": check}


def positive(allow_none: bool = False) -> dict[str, Check]:
    return {"check": lambda name, value: positive_int(name, value, allow_none)}


FLAG: dict[str, Check] = {"check": flag}


def one_of(allowed: Callable[[], list[str] | tuple[str, ...]], label: str | None = None) -> dict[str, Check]:
    """A choice among `allowed()` (called at check time: registries import lazily); `label` replaces the
    option path in the message (the merge rule)."""
    return {"check": lambda name, value: choice(label or name, value, allowed())}
