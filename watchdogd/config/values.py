"""The value parsers: a YAML value in, a Python value out, or Invalid(why); and `key`, a config key declared once."""

from __future__ import annotations

import os
from dataclasses import field
from typing import Any, Callable, Dict, Generic, Tuple, Type, TypeVar, Union

from ..durations import parse_duration
from ..kinds import DEFAULT_GRACE, FINDING_KINDS, Kind
from ..words import Word


class Invalid(Exception):
    """A value that cannot be used; its message says why, the reader adds where."""


# ---- value parsers: a YAML value in, a Python value out, or Invalid(why) ----------

Parser = Callable[[Any], Any]
W = TypeVar("W", bound=Word)


def duration(value: Any) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def positive_duration(value: Any) -> float:
    seconds = duration(value)
    if seconds <= 0:
        raise Invalid(f"must be longer than 0, not {value!r}")
    return seconds


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, not {value!r}")
    return value


def string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"must be a non-empty string, not {value!r}")
    return value


def abs_path(value: Any) -> str:
    text = string(value)
    if not os.path.isabs(text):
        raise Invalid(f"must be an absolute path, not {text!r}")
    return os.path.normpath(text)


def abs_paths(value: Any) -> Tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise Invalid(f"must be a list of absolute paths, not {value!r}")
    return tuple(abs_path(v) for v in value)


def names(value: Any) -> Tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise Invalid(f"must be a non-empty list of names, not {value!r}")
    return tuple(string(v) for v in value)


def int_at_least(lowest: int) -> Parser:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"must be a whole number, not {value!r}")
        if value < lowest:
            raise Invalid(f"must be at least {lowest}, not {value}")
        return value

    return parse


class Choice(Generic[W]):
    """One of an enum's words, read into its member. The reader hands it a scalar as written: YAML 1.1 would read
    `kvm_selftest: off` as the boolean false."""

    def __init__(self, words: Type[W]):
        self.words = words

    def __call__(self, value: Any) -> W:
        try:
            return self.words(value)
        except ValueError:
            raise Invalid(f"must be one of {', '.join(map(str, self.words))}, not {value!r}") from None


def choice(words: Type[W]) -> Choice[W]:
    return Choice(words)


def argv(value: Any) -> Tuple[str, ...]:
    """A program and its arguments, as a list: never a shell line; the program by its absolute path."""
    if not isinstance(value, list) or not value or not all(isinstance(a, str) and a for a in value):
        raise Invalid(f"must be a non-empty list of strings (a program and its arguments), not {value!r}")
    if not value[0].startswith("/"):
        raise Invalid(f"the program must be an absolute path, not {value[0]!r}")
    return tuple(value)


def restart_command(value: Any) -> Union[str, Tuple[str, ...]]:
    if value == "auto":
        return "auto"
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        if not os.path.isabs(value[0]):
            raise Invalid(f"the command must start with an absolute path, not {value[0]!r}")
        return tuple(value)
    raise Invalid(f"must be 'auto' or an argv list such as [/bin/systemctl, restart, libvirtd], not {value!r}")


def optional(parse: Parser) -> Parser:
    def parse_or_none(value: Any) -> Any:
        return None if value is None else parse(value)

    return parse_or_none


def listen(value: Any) -> str:
    """HOST:PORT, [V6]:PORT or :PORT (loopback); the port checked here, the address when it is bound.

    >>> listen(":9877"), listen("0.0.0.0:9877"), listen("[::1]:9877")
    (':9877', '0.0.0.0:9877', '[::1]:9877')
    """
    text = string(value)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise Invalid(f"must be HOST:PORT (e.g. 127.0.0.1:9877, or :9877 for loopback), not {text!r}")
    if host.startswith("[") != host.endswith("]") or (":" in host and not host.startswith("[")):
        raise Invalid(f"an IPv6 address goes in brackets ([::1]:9877), not {text!r}")
    return text


def grace(value: Any) -> Dict[Kind, float]:
    """finding kind -> how long its condition must hold before it opens."""
    if not isinstance(value, dict):
        raise Invalid(f"must map finding kinds to durations (e.g. {{cache_empty: 30s}}), not {value!r}")
    out: Dict[Kind, float] = {}
    for kind, length in value.items():
        if kind not in FINDING_KINDS:
            raise Invalid(f"unknown finding kind {kind!r} (known: {', '.join(FINDING_KINDS)})")
        out[Kind(kind)] = duration(length)
    return {**DEFAULT_GRACE, **out}  # the operator's on top of the defaults (0s turns one off)


def key(default: Any, parse: Parser, duration: bool = False) -> Any:
    """A config key, declared once: its default, its parser, and whether it is a duration (for the dump)."""
    return field(default=default, metadata={"parse": parse, "duration": duration})
