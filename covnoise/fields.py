"""Config fields: what people are told about each one, and the check each value gets.

RunConfig (covnoise.config) declares its fields with `config_field`, which attaches a
FieldInfo: the CLI's help, the app's label, the allowed choices or range (validation) and the
app's widget maximum. `check_field` checks one value against its FieldInfo. This module
imports nothing from the package, so the config and every layer above can use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

#: Largest integer any int field takes: a signed 64-bit integer (torch's index type).
MAX_INT = 2**63 - 1


class ConfigError(ValueError):
    """A config field holds a value that is not allowed; the message names the field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class FieldInfo:
    """What people are told about a RunConfig field, and what it allows.

    `help` is the CLI's help text, `label` the app's label, `choices` / `low` (with `strict`
    for >) / `max` (inclusive; ints default to MAX_INT) the values validation allows, `high`
    the largest value the app's form offers (a widget range, at most `max`).
    """

    help: str
    label: str
    choices: tuple[str, ...] | None = None
    low: float | None = None
    strict: bool = False
    high: float | None = None
    max: float | None = None


def config_field(
    default: Any = None, help: str = "", label: str = "", *, factory: Any = None, **info: Any
) -> Any:
    """A dataclass field carrying its FieldInfo (the one source of help, labels and ranges)."""
    meta = {"info": FieldInfo(help=help, label=label, **info)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def check_field(name: str, value: Any, info: FieldInfo, annotation: Any) -> None:
    """Check one field against its FieldInfo; None passes for optional fields."""
    if info.choices is not None:
        _choice(name, value, info.choices)
        return
    if value is None and "None" in str(annotation):
        return
    if info.low is None:
        return
    if str(annotation).startswith("int"):
        _int(name, value, int(info.low), MAX_INT if info.max is None else int(info.max))
    else:
        _float(name, value, info.low, strict=info.strict, high=info.max)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(name, f"{value!r} is not one of {', '.join(allowed)}")


def _int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"{value!r} is not an integer; allowed: integers {low}..{high}")
    if not low <= value <= high:
        raise ConfigError(name, f"{value} is not allowed; use an integer from {low} to {high}")


def _float(
    name: str, value: Any, low: float, strict: bool = False, high: float | None = None
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(name, f"{value!r} is not a finite number")
    too_high = high is not None and value > high
    if value < low or (strict and value == low) or too_high:
        op = ">" if strict else ">="
        top = "" if high is None else f" and <= {high:g}"
        raise ConfigError(name, f"{value:g} is not allowed; use a number {op} {low:g}{top}")
