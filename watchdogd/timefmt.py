"""Time stamps as operators read them: UTC, ISO 8601, whole seconds."""

from __future__ import annotations

import datetime


def iso_utc(wall: float) -> str:
    """
    >>> iso_utc(0)
    '1970-01-01T00:00:00Z'
    """
    return datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def compact_utc(wall: float) -> str:
    """A UTC time that sorts and makes a safe directory name.

    >>> compact_utc(0)
    '19700101T000000.000000Z'
    """
    return datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
