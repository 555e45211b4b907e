"""Waiting on conditions with deadlines: the only kind of waiting the suite does."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Optional, TypeVar, Union

if TYPE_CHECKING:  # annotations only: the fast lane imports this on Python 3.7
    from typing import Literal  # novm (annotations only)

T = TypeVar("T")


class Timeout(AssertionError):
    pass


def wait_for(
    condition: Callable[[], Union[T, None, Literal[False]]], timeout: float, what: str, poll: float = 0.05
) -> T:
    """Poll until condition() returns something truthy; fail with `what` at the deadline.

    The condition may say "not yet" with None or False (`cond and value` reads as it is meant)."""
    deadline = time.monotonic() + timeout
    last_error: Optional[BaseException] = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except (OSError, ValueError) as exc:  # a /proc entry vanishing mid-read, etc.
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise Timeout(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(poll)
