"""SIGTERM, SIGINT and SIGHUP as flags the loop reads: the handlers set a flag, the wake pipe ends select()."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any, Dict, Optional


class SignalFlags:
    """stop (SIGTERM, SIGINT, or request_stop from another thread) and reload (SIGHUP)."""

    def __init__(self) -> None:
        self.stop = False
        self.reload = False
        self._saved: Dict[int, Any] = {}

    def install(self, wakeup_fd: int) -> None:
        """Main thread only. Undone by restore()."""
        signal.set_wakeup_fd(wakeup_fd, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self._saved[sig] = signal.signal(sig, self._on_signal)

    def restore(self) -> None:
        if self._saved:
            signal.set_wakeup_fd(-1)
            for sig, handler in self._saved.items():
                signal.signal(sig, handler)
            self._saved.clear()

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        if signum == signal.SIGHUP:
            self.reload = True
        else:
            self.stop = True
