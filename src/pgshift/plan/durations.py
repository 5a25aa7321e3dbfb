"""Durations as a plan writes them: a number and a unit (`500ms`, `2s`, `10m`, `1h`), or 0."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> timedelta:
    """`"500ms"` -> 0.5 s. A bare 0 is accepted (it means unset); any other bare number is not,
    because a unit-less duration is the classic way to set 30000 seconds instead of 30."""
    if isinstance(value, timedelta):
        return value
    if value == 0 and not isinstance(value, bool):
        return timedelta(0)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    raise ValueError(
        f"{value!r} is not a duration: write a number and a unit, as 500ms, 2s, 10m or 1h"
    )


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling, for messages and SQL settings (`1s`, `250ms`)."""
    ms = round(value.total_seconds() * 1000)
    if ms == 0:
        return "0"
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def to_ms(value: timedelta) -> int:
    return round(value.total_seconds() * 1000)
