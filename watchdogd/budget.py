"""What one pass may still spend: a cap on costly reads or walks that a flood would otherwise make unbounded."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Budget:
    """How many more of something one pass may do (full captures, package look-ups, entries walked).

    >>> b = Budget(1)
    >>> b.take(), b.take()
    (True, False)
    """

    left: int

    def take(self) -> bool:
        """One more, if any is left."""
        if self.left <= 0:
            return False
        self.left -= 1
        return True
