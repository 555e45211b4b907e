"""Durations as operators write them in the config: ``30s``, ``5m``, ``1h30m``, ``250ms``, or seconds."""

from __future__ import annotations

import math
import re
from typing import Union

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: Union[str, int, float]) -> float:
    """Seconds in a duration; raise ValueError with the reason for anything else.

    >>> parse_duration("30s"), parse_duration("5m"), parse_duration("1h30m")
    (30.0, 300.0, 5400.0)
    >>> parse_duration(2), parse_duration("0.5"), parse_duration("250ms")
    (2.0, 0.5, 0.25)
    >>> parse_duration("5 minutes")
    Traceback (most recent call last):
    ...
    ValueError: '5 minutes' is not a duration (use e.g. 30s, 5m, 1h or plain seconds)
    >>> parse_duration(-1)
    Traceback (most recent call last):
    ...
    ValueError: a duration cannot be negative: -1
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 5m, 1h or plain seconds)")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"a duration cannot be negative: {value}")
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"{value!r} is not a duration")
        return float(value)
    text = str(value).strip()
    try:
        return parse_duration(float(text))
    except ValueError as exc:
        if "negative" in str(exc):
            raise
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 5m, 1h or plain seconds)")
    return total


def format_duration(seconds: float) -> str:
    """The shortest config spelling of a duration, for ``config show`` and messages.

    >>> format_duration(30), format_duration(300), format_duration(5400), format_duration(0.25)
    ('30s', '5m', '1h30m', '250ms')
    >>> format_duration(90.5)
    '90.5s'
    """
    if seconds < 1 and seconds != 0:
        return f"{seconds * 1000:g}ms"
    if seconds != int(seconds):
        return f"{seconds:g}s"
    whole = int(seconds)
    if whole == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    return "".join(parts)
