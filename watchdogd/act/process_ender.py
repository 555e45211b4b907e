"""Ending a process that is not our child, without ever hitting a recycled PID.

Where the kernel has pidfd (5.3+; on Python before 3.9 through the raw syscall), the process
is held by a pidfd first and only then re-verified (same start time, same probe); a signal sent through the pidfd
can only reach that very process, so a PID recycled after the check is safe. On
older kernels (RHEL 8's 4.18, Kylin V10's 4.19) the start time is re-read right before each kill:
the window left is that between two syscalls, and it is said so in the result.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import signal
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from ..fsafe import libc
from ..model import Process
from ..observe.procfs import ProcFS


@dataclass(frozen=True)
class Outcome:
    ended: bool
    how: str  # e.g. "SIGTERM, exited in 0.02s"
    stuck_in_kernel: Optional[str] = None  # wchan when SIGKILL did not end it (D state)


NO_PIDFD = "no pidfd: its start time re-read before each signal"  # what a kill's detail says of the older path
# Python before 3.9 has no wrapper: the syscalls by number, where Linux numbers them alike (since 5.1, every
# architecture but alpha and the offset ABIs of mips)
_SYSCALLS = {"pidfd_send_signal": 424, "pidfd_open": 434}
_SAME_NUMBERS = ("x86_64", "aarch64", "ppc64le", "s390x", "riscv64")


def _syscall(name: str, *args: Optional[int]) -> int:
    if os.uname().machine not in _SAME_NUMBERS:
        raise OSError(errno.ENOSYS, f"{name}: no wrapper in this Python and no known number on this architecture")
    result = int(libc().syscall(_SYSCALLS[name], *args))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))  # ESRCH is ProcessLookupError, as the wrappers raise
    return result


def pidfd_open(pid: int) -> int:
    if hasattr(os, "pidfd_open"):
        return os.pidfd_open(pid)  # novm (3.9+, asked for above)
    return _syscall("pidfd_open", pid, 0)


def pidfd_send_signal(pidfd: int, sig: signal.Signals) -> None:
    if hasattr(signal, "pidfd_send_signal"):
        signal.pidfd_send_signal(pidfd, sig)  # novm (3.9+, asked for above)
    else:
        _syscall("pidfd_send_signal", pidfd, int(sig), None, 0)


def _pidfd_supported() -> bool:
    """pidfd needs a 5.3 kernel: 4.19 (Kylin V10, openEuler 20.03) answers ENOSYS, and so may a seccomp filter."""
    try:
        fd = pidfd_open(os.getpid())
    except OSError:
        return False
    os.close(fd)
    return True


class ProcessEnder:
    """Signals verified processes: SIGTERM, a grace period, then SIGKILL; a group all at once."""

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
        return self.end_group([seen], verify)[seen.pid]

    def end_group(self, group: Sequence[Process], verify: Callable[[Process], Optional[str]]) -> Dict[int, Outcome]:
        """End each process of `group` that, held and re-read, still passes `verify`: all together, so the group
        takes one grace and one SIGKILL wait, however many it has (the qemu uid may add members that ignore
        SIGTERM). What happened to each, by pid."""
        out: Dict[int, Outcome] = {}
        fds: Dict[int, Optional[int]] = {}
        try:
            live: List[Process] = []
            for seen in group:
                early = self._hold(seen, fds)
                if early is None:
                    early = self._verify(seen, verify)
                if early is not None:
                    out[seen.pid] = early
                else:
                    live.append(seen)
            for sig, wait in ((signal.SIGTERM, self.grace), (signal.SIGKILL, 2.0)):
                live = self._signal_all(live, sig, wait, fds, out)
            for seen in live:
                wchan = self.proc.kernel_stack(seen.pid).get("wchan") or "unknown"
                out[seen.pid] = Outcome(False, "still there after SIGKILL", stuck_in_kernel=wchan)
        finally:
            for fd in fds.values():
                if fd is not None:
                    os.close(fd)
        return out

    def _hold(self, seen: Process, fds: Dict[int, Optional[int]]) -> Optional[Outcome]:
        """Hold seen by a pidfd where the kernel has one (into fds); an Outcome when that already settles it."""
        fds[seen.pid] = None
        if not self.use_pidfd:
            return None
        try:
            fds[seen.pid] = pidfd_open(seen.pid)
        except ProcessLookupError:
            return Outcome(True, "already gone")
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EPERM):  # EPERM: a seccomp filter without pidfd_open
                return Outcome(False, f"cannot hold it: {exc.strerror}")
        return None

    def _verify(self, seen: Process, verify: Callable[[Process], Optional[str]]) -> Optional[Outcome]:
        current = self.same_process(seen)
        if current is None:
            return Outcome(True, "already gone (its PID now names another process, which was left alone)")
        reason = verify(current)
        return Outcome(False, f"not signalled: {reason}") if reason is not None else None

    def _signal_all(
        self,
        live: List[Process],
        sig: signal.Signals,
        wait: float,
        fds: Dict[int, Optional[int]],
        out: Dict[int, Outcome],
    ) -> List[Process]:
        """Send sig to each, then wait for them all within one `wait`: those still there after it."""
        sent_at = self.clock()
        sent: List[Process] = []
        for seen in live:
            if self._send(fds[seen.pid], seen, sig):
                sent.append(seen)
            else:
                out[seen.pid] = Outcome(True, f"exited before {sig.name}")
        deadline = sent_at + wait
        left: List[Process] = []
        for seen in sent:
            pidfd = fds[seen.pid]
            if self._wait_exit(pidfd, seen, max(0.0, deadline - self.clock())):
                held = "held by a pidfd" if pidfd is not None else NO_PIDFD
                out[seen.pid] = Outcome(True, f"{sig.name}, exited in {self.clock() - sent_at:.2f}s ({held})")
            else:
                left.append(seen)
        return left

    def _send(self, pidfd: Optional[int], seen: Process, sig: signal.Signals) -> bool:
        try:
            if pidfd is not None:
                pidfd_send_signal(pidfd, sig)
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
