"""Timing getDomainCapabilities, at most one call in flight, killed at the timeout.

libvirt serves calls from a small worker pool, and every call that waits behind a
hung probe holds a worker. So: one call at a time in this process (the object
holds at most one child) and across processes on the host (an flock on the
state_dir itself, which the child holds for as long as it lives; a lock on the
dir, not a file in it, so `check` creates nothing).
"""

from __future__ import annotations

import errno
import json
import os
import select
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from .. import children
from ..config import LatencyWhen
from ..fsafe import try_flock_dir
from ..model import LatencyResult, Observation

IDLE = "libvirt idle: socket-activated, not running"


def why_not_connect(obs: Optional[Observation], when: LatencyWhen) -> Optional[str]:
    """Why no getDomainCapabilities call may go out now (latency.when), or None when it may.

    Connecting to a socket-activated libvirtd starts it, and every client resets its
    idle timer (libvirtd --timeout counts clients and running domains): a call on a
    timer keeps an idle daemon alive for good. So by default a call goes out only
    while a libvirt daemon runs and is in use anyway: a probe dir exists (someone
    asked for capabilities), or a guest's QEMU runs (it never idles out then).
    """
    if when is LatencyWhen.ALWAYS:
        return None
    if obs is None:
        return "not before the first scan"
    if not obs.libvirt_pids:
        return IDLE
    if when is LatencyWhen.BUSY and not obs.probes and not obs.guests:
        return "libvirt idle: running with no guest and no probe, left to idle out (latency.when: busy)"
    return None


# what `systemctl is-active` prints for a unit, one word a line (systemd's UnitActiveState, and "unknown")
UNIT_STATES = frozenset(
    ("active", "reloading", "inactive", "failed", "activating", "deactivating", "maintenance", "refreshing", "unknown")
)


def any_socket_active(printed: str, units: int) -> Optional[bool]:
    """Whether `systemctl is-active` said one of `units` sockets is active; None when its answer cannot be read.

    A failed systemctl (no bus, PID 1 busy) prints nothing or an error, and reads as "cannot tell",
    never as "not socket-activated": that answer would let latency calls go out on a timer and keep
    an idle libvirt from exiting.

    >>> any_socket_active("inactive\\nactive\\ninactive\\ninactive\\n", 4), any_socket_active("inactive\\n" * 4, 4)
    (True, False)
    >>> any_socket_active("", 4) is None and any_socket_active("Failed to connect to bus\\n", 1) is None
    True
    """
    states = [line.strip() for line in printed.splitlines() if line.strip()]
    if len(states) != units or not all(state in UNIT_STATES for state in states):
        return None
    return "active" in states


class SocketActivation:
    """Is libvirt socket-activated here (libvirtd.socket or virtqemud.socket active)? Asked of systemd.

    "Yes" and "cannot tell" both mean "respect libvirt's idle timer" and are kept `every`
    seconds; "no" (nothing listens, so a call neither wakes libvirt nor keeps it up) only
    `no_for`, so a socket caught mid-restart (a libvirt upgrade) never opens a minute of calls."""

    UNITS = ("libvirtd.socket", "virtqemud.socket", "libvirtd-ro.socket", "virtqemud-ro.socket")

    def __init__(
        self,
        systemd_dir: str = "/run/systemd/system",
        every: float = 60.0,
        no_for: float = 5.0,
        systemctl: str = "systemctl",
    ):
        self.systemd_dir = systemd_dir
        self.systemctl = systemctl
        self.every = every
        self.no_for = no_for
        self.clock: Callable[[], float] = time.monotonic
        self._answer: Optional[bool] = None
        self._at = 0.0

    def __call__(self) -> bool:
        if not os.path.isdir(self.systemd_dir):
            return False  # no systemd: nothing starts libvirt on a connection
        now = self.clock()
        if self._answer is None or now - self._at >= (self.every if self._answer else self.no_for):
            self._answer = self._any_active()
            self._at = now
        return self._answer

    def _any_active(self) -> bool:
        """One `systemctl is-active` for all the units: it prints one state a line, in order."""
        try:
            r = children.run_with_timeout([self.systemctl, "is-active", *self.UNITS], 5, stderr=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            return True  # cannot tell: assume an idle timer to respect
        answer = any_socket_active((r.stdout or b"").decode("utf-8", "replace"), len(self.UNITS))
        return True if answer is None else answer


class LatencyProbe:
    def __init__(
        self,
        uri: str,
        timeout: float,
        lock_path: Optional[str],
        python: str = sys.executable,
        clock: Callable[[], float] = time.monotonic,
        connect_only: bool = False,
    ):
        self.uri = uri
        self.connect_only = connect_only
        self.timeout = timeout
        self.lock_path = lock_path
        self.python = python
        self.clock = clock
        self._child: Optional[subprocess.Popen[bytes]] = None
        self._lock_fd: Optional[int] = None
        self._buffer = b""
        self._lines: List[Dict[str, Any]] = []
        self.started_at: Optional[float] = None

    @property
    def in_flight(self) -> bool:
        return self._child is not None

    @property
    def deadline(self) -> Optional[float]:
        return None if self.started_at is None else self.started_at + self.timeout

    def fileno(self) -> Optional[int]:
        """The child's stdout, for a select() in the daemon's loop."""
        if self._child is None or self._child.stdout is None:
            return None
        return self._child.stdout.fileno()

    def _take_lock(self) -> Optional[str]:
        """None when the host-wide lock is ours, else why we may not probe now."""
        if self.lock_path is None:
            return None
        try:
            fd = try_flock_dir(self.lock_path)
        except OSError as exc:
            # No writable state dir (a read-only check by hand): go on without the
            # host-wide guard; this process still runs at most one call.
            if exc.errno in (errno.EACCES, errno.EROFS, errno.ENOENT, errno.EPERM):
                return None
            return f"cannot open {self.lock_path}: {exc.strerror}"
        if fd is None:
            return "another latency probe is still in flight on this host"
        self._lock_fd = fd
        return None

    def start(self) -> Optional[LatencyResult]:
        """Start a call; a LatencyResult (skipped) when none may start now."""
        if self._child is not None:
            return LatencyResult(reachable=None, answered=False, skipped="a latency probe is already in flight")
        busy = self._take_lock()
        if busy:
            return LatencyResult(reachable=None, answered=False, skipped=busy)
        pass_fds = (self._lock_fd,) if self._lock_fd is not None else ()
        env = dict(os.environ)
        env["KVMWD_PARENT_PID"] = str(os.getpid())
        try:
            self._child = children.start(
                [self.python, "-m", "watchdogd.observe.latency_child", self.uri]
                + (["--connect-only"] if self.connect_only else []),
                stderr=subprocess.DEVNULL,
                pass_fds=pass_fds,
                env=env,
            )
        except OSError as exc:
            self._release_lock()
            return LatencyResult(reachable=None, answered=False, error=f"cannot start the latency probe: {exc}")
        assert self._child.stdout is not None
        os.set_blocking(self._child.stdout.fileno(), False)
        self.started_at = self.clock()
        self._buffer = b""
        self._lines = []
        return None

    def _drain(self) -> bool:
        """Read what the child said; True at EOF."""
        assert self._child is not None and self._child.stdout is not None
        while True:
            try:
                chunk = os.read(self._child.stdout.fileno(), 65536)
            except BlockingIOError:
                return False
            if not chunk:
                return True
            self._buffer += chunk
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                try:
                    self._lines.append(json.loads(line))
                except ValueError:
                    pass

    def poll(self) -> Optional[LatencyResult]:
        """The result once the call ended or ran out of time; None while it runs."""
        if self._child is None:
            return None
        eof = self._drain()
        timed_out = self.clock() >= (self.deadline or 0)
        if not eof and not timed_out:
            return None
        if not eof:
            self._kill()
        else:
            self._reap()
        return self._result(timed_out and not eof)

    def cancel(self) -> None:
        """End a call in flight (shutdown): no orphan is left behind."""
        if self._child is not None:
            self._kill()
            self._lines = []

    def run(self) -> LatencyResult:
        """One call, blocking until it ends or times out (for `check`)."""
        skipped = self.start()
        if skipped is not None:
            return skipped
        while True:
            result = self.poll()
            if result is not None:
                return result
            fd = self.fileno()
            wait = max(0.0, (self.deadline or 0) - self.clock())
            if fd is not None:
                select.select([fd], [], [], min(wait, 1.0))

    def _kill(self) -> None:
        assert self._child is not None
        children.end(self._child)  # the whole group; one stuck in the kernel is reaped later
        self._forget()

    def _reap(self) -> None:
        assert self._child is not None
        children.reap(self._child, children.KILL_WAIT)  # at EOF it is exiting
        self._forget()

    def _forget(self) -> None:
        self._child = None
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _result(self, timed_out: bool) -> LatencyResult:
        stages = {line.get("stage"): line for line in self._lines}
        connected = stages.get("connected")
        version = connected.get("version") if connected else None
        connect_ms = connected.get("ms") if connected else None
        if self.connect_only and connected:
            return LatencyResult(reachable=True, answered=False, connect_ms=connect_ms, libvirt_version=version)
        if "domcaps" in stages:
            hypervisor = stages.get("hypervisor") or {}
            return LatencyResult(
                reachable=True,
                answered=True,
                connect_ms=connect_ms,
                domcaps_ms=stages["domcaps"]["ms"],
                libvirt_version=version,
                qemu_version=hypervisor.get("version") if isinstance(hypervisor.get("version"), int) else None,
            )
        error = stages.get("error")
        if error is not None:
            if error.get("where") == "connect":
                return LatencyResult(reachable=False, answered=False, error=error.get("message"))
            return LatencyResult(
                reachable=True,
                answered=False,
                connect_ms=connect_ms,
                domcaps_ms=error.get("ms"),
                error=error.get("message"),
                libvirt_version=version,
            )
        if timed_out:
            return LatencyResult(
                reachable=True if connected else None,
                answered=False,
                connect_ms=connect_ms,
                timed_out=True,
                libvirt_version=version,
            )
        return LatencyResult(reachable=None, answered=False, error="the latency probe exited without an answer")
