"""Run one batch of actions on a worker thread, so the daemon's loop keeps scanning and pinging.

A kill waits out its grace period and a libvirt restart can take a minute and a
half; the loop must not: it still owes systemd its WATCHDOG=1 and the operator a
prompt report. One batch at a time (the policy engine is only touched by the
batch while it runs, and by the loop only when none runs); the loop learns that a
batch ended through a pipe it selects on.
"""

from __future__ import annotations

import os
import threading
from typing import FrozenSet, List, Optional, Sequence, Tuple

from ..act.actions import ActionRecord, Actor
from ..decide.policy import PlannedAction

Outcome = Tuple[List[ActionRecord], Optional[str]]


class ActionRunner:
    def __init__(self) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread: Optional[threading.Thread] = None
        self._outcome: Optional[Outcome] = None
        self.subjects: FrozenSet[Tuple[str, str]] = frozenset()  # (kind, subject) of the batch in flight

    @property
    def busy(self) -> bool:
        return self._thread is not None

    def fileno(self) -> int:
        return self._r

    def submit(self, actor: Actor, planned: Sequence[PlannedAction]) -> None:
        assert self._thread is None, "one batch at a time"
        batch = list(planned)
        self.subjects = frozenset(p.finding.key for p in batch)

        def work() -> None:
            try:
                self._outcome = actor.execute(batch)
            finally:
                os.write(self._w, b"!")

        self._thread = threading.Thread(target=work, name="kvm-watchdog-actions", daemon=True)
        self._thread.start()

    def take(self) -> Optional[Outcome]:
        """The finished batch's records and breaker change, once; None while it runs."""
        if self._thread is None or self._thread.is_alive():
            return None
        try:
            os.read(self._r, 64)
        except BlockingIOError:
            pass
        self._thread.join()
        self._thread = None
        self.subjects = frozenset()
        outcome, self._outcome = self._outcome, None
        return outcome if outcome is not None else ([], None)

    def wait(self, timeout: float) -> bool:
        """Wait for a running batch to end; True when none runs any more."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass
