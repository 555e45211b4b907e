"""What could not be seen or saved: one value type, and the collector each pipeline hands to whoever may meet one.

A problem is news once: "report once" compares keys, not words, so a time, a size
or an errno in the words never makes the same problem news again. Whoever meets one
(the state store reading a corrupt file, the domain-log monitor over its file limit)
adds it to the collector it was given; the scan takes them all into its observation
(`drain`), so nothing keeps a list of its own for someone else to empty.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple


@dataclass(frozen=True)
class Problem:
    text: str
    key: str = field(default="", compare=False)  # what "the same problem" means; the text when not given

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.text)

    def __str__(self) -> str:
        return self.text


class Problems:
    """The collector: added to from the loop and the action lanes (a lock), drained once a scan, each key once."""

    def __init__(self) -> None:
        self._pending: Dict[str, Problem] = {}
        self._lock = threading.Lock()

    def add(self, text: str, key: Optional[str] = None) -> None:
        problem = Problem(text, key or text)
        with self._lock:
            self._pending[problem.key] = problem  # the latest words for a key: the newest errno or size

    def drain(self) -> Tuple[Problem, ...]:
        with self._lock:
            taken, self._pending = tuple(self._pending.values()), {}
        return taken
