"""Ending a process that is not our child, without ever hitting a recycled PID.

Where the kernel has pidfd (5.3+), the process is held by a pidfd first and only
then re-verified (same start time, same probe); a signal sent through the pidfd
can only reach that very process, so a PID recycled after the check is safe. On
older kernels (RHEL 8's 4.18) the start time is re-read right before each kill:
the window left is that between two syscalls, and it is said so in the result.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import time
from dataclasses import dataclass
from typing import Callable, Optional

from ..model import Process
from ..observe.procfs import ProcFS


@dataclass(frozen=True)
class Outcome:
    ended: bool
    how: str  # e.g. "SIGTERM, exited in 0.02s"
    stuck_in_kernel: Optional[str] = None  # wchan when SIGKILL did not end it (D state)


def _pidfd_supported() -> bool:
    if not hasattr(os, "pidfd_open") or not hasattr(signal, "pidfd_send_signal"):
        return False
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:
        return False
    os.close(fd)
    return True


class ProcessEnder:
    """Signals one verified process: SIGTERM, a grace period, then SIGKILL."""

    def __init__(
        self, proc: ProcFS, grace: float, use_pidfd: Optional[bool] = None, clock: Callable[[], float] = time.monotonic
    ):
        self.proc = proc
        self.grace = grace
        self.use_pidfd = _pidfd_supported() if use_pidfd is None else use_pidfd
        self.clock = clock

    def same_process(self, seen: Process) -> Optional[Process]:
        """The process as it is now, if it is still the one seen (not a recycled PID)."""
        now = self.proc.process(seen.pid)
        if now is None or now.is_zombie or now.start_boot_s != seen.start_boot_s:
            return None
        return now

    def end(self, seen: Process, verify: Callable[[Process], Optional[str]]) -> Outcome:
        """End `seen` if, held and re-read, it still passes `verify` (None = ok)."""
        pidfd = None
        if self.use_pidfd:
            try:
                pidfd = os.pidfd_open(seen.pid)
            except ProcessLookupError:
                return Outcome(True, "already gone")
            except OSError as exc:
                if exc.errno not in (errno.ENOSYS, errno.EPERM):  # EPERM: a seccomp filter without pidfd_open
                    return Outcome(False, f"cannot hold it: {exc.strerror}")
        try:
            current = self.same_process(seen)
            if current is None:
                return Outcome(True, "already gone (its PID now names another process, which was left alone)")
            reason = verify(current)
            if reason is not None:
                return Outcome(False, f"not signalled: {reason}")
            for sig, wait in ((signal.SIGTERM, self.grace), (signal.SIGKILL, 2.0)):
                sent_at = self.clock()
                if not self._send(pidfd, seen, sig):
                    return Outcome(True, f"exited before {sig.name}")
                if self._wait_exit(pidfd, seen, wait):
                    return Outcome(True, f"{sig.name}, exited in {self.clock() - sent_at:.2f}s")
            stack = self.proc.kernel_stack(seen.pid)
            return Outcome(False, "still there after SIGKILL", stuck_in_kernel=stack.get("wchan") or "unknown")
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def _send(self, pidfd: Optional[int], seen: Process, sig: signal.Signals) -> bool:
        try:
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, sig)
            else:
                if self.same_process(seen) is None:
                    return False
                os.kill(seen.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def _wait_exit(self, pidfd: Optional[int], seen: Process, timeout: float) -> bool:
        deadline = self.clock() + timeout
        if pidfd is not None:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            while True:
                left = deadline - self.clock()
                if poller.poll(max(0, int(left * 1000))):
                    return True  # readable: the process has exited (a zombie now, its parent's to reap)
                if left <= 0:
                    return False
        return self.wait_gone(seen, deadline - self.clock())

    def wait_gone(self, seen: Process, timeout: float) -> bool:
        """Poll /proc until `seen` has exited (for kernels without pidfd, and for processes not held)."""
        deadline = self.clock() + timeout
        while self.clock() < deadline:
            if self.same_process(seen) is None:
                return True
            time.sleep(0.02)
        return self.same_process(seen) is None
