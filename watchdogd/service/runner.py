"""Run batches of actions on worker threads, so the daemon's loop keeps scanning and pinging.

A kill waits out its grace period and a libvirt restart can take a minute and a
half; the loop must not: it still owes systemd its WATCHDOG=1 and the operator a
prompt report. One batch at a time per lane (the daemon keeps two: proven and
unproven findings); a lane that finishes wakes the loop through the one Waker,
the same self-pipe that signals and request_stop() write to.
"""

from __future__ import annotations

import os
import threading
from typing import FrozenSet, List, Optional, Sequence, Tuple

from ..act.actions import ActionRecord, Actor
from ..decide.policy import BreakerChange, PlannedAction
from ..kinds import Kind

Outcome = Tuple[List[ActionRecord], Optional[BreakerChange]]


class Waker:
    """One self-pipe for the loop's select(): signals (set_wakeup_fd), finished batches and other threads."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def fileno(self) -> int:
        return self.r

    def wake(self) -> None:
        try:
            os.write(self.w, b"w")
        except BlockingIOError:
            pass  # full: the loop is woken already

    def drain(self) -> None:
        try:
            while os.read(self.r, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        for fd in (self.r, self.w):
            try:
                os.close(fd)
            except OSError:
                pass


class ActionRunner:
    def __init__(self, waker: Waker) -> None:
        self.waker = waker
        self._thread: Optional[threading.Thread] = None
        self._outcome: Optional[Outcome] = None
        self.subjects: FrozenSet[Tuple[Kind, str]] = frozenset()  # (kind, subject) of the batch in flight

    @property
    def busy(self) -> bool:
        return self._thread is not None

    def submit(self, actor: Actor, planned: Sequence[PlannedAction]) -> None:
        assert self._thread is None, "one batch at a time"
        batch = list(planned)
        self.subjects = frozenset(p.finding.key for p in batch)

        def work() -> None:
            try:
                self._outcome = actor.execute(batch)
            finally:
                self.waker.wake()

        self._thread = threading.Thread(target=work, name="kvm-watchdog-actions", daemon=True)
        self._thread.start()

    def take(self) -> Optional[Outcome]:
        """The finished batch's records and breaker change, once; None while it runs."""
        if self._thread is None or self._thread.is_alive():
            return None
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
