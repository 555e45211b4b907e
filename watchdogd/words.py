"""Enums whose members are the contract's own words: equal to, hashed as and printed as their value.

A finding's kind, a probe member's role, a diagnosed cause: each is a word of the journal, the
JSON documents and the config, and a type in the code. Python 3.11 prints a str-mixin enum as
`Kind.PROBE_HUNG` in an f-string where 3.7 prints its value; these print their value on both.
"""

from __future__ import annotations

import enum


class Word(str, enum.Enum):
    """A str enum that prints as its value (the word) on every Python from 3.7."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)
