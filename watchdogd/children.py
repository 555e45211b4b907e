"""Every child the watchdog starts (the latency probe, systemctl for a restart, the KVM self-test), in one place.

Each runs in a session of its own, so that ending it ends all of it (`killpg`), with no
stdin and `/` as its cwd. Nothing here waits on an ended child for long: one stuck in the
kernel (state D, a hung KVM ioctl) does not die of SIGKILL until it leaves the kernel, and
a daemon that waited on it would stop pinging systemd. Such a child is left to CPython's
subprocess, which reaps it at a later Popen once it is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import IO, Any, Dict, Mapping, Optional, Sequence, Union

KILL_WAIT = 1.0  # how long an ended child is waited for before it is left to be reaped later
Stream = Union[int, IO[Any], None]


class Cancelled(Exception):
    """The daemon is stopping: the child was ended, its outcome is unknown."""


def start(
    argv: Sequence[str], stdout: Stream = subprocess.PIPE, stderr: Stream = subprocess.STDOUT, **popen: Any
) -> subprocess.Popen[bytes]:
    """A child in its own session (so its whole group can be ended), stdin closed (unless given), cwd /."""
    popen.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(list(argv), stdout=stdout, stderr=stderr, start_new_session=True, cwd="/", **popen)


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def end(child: subprocess.Popen[bytes]) -> bool:
    """SIGKILL the child's whole process group, then reap it if it dies within KILL_WAIT; True when reaped."""
    _kill_group(child)
    return reap(child, KILL_WAIT)


def reap(child: subprocess.Popen[bytes], wait: float = 0.0) -> bool:
    """Reap the child if it has exited (waiting at most `wait`), and close its pipes; True when reaped."""
    try:
        child.wait(wait)
        done = True
    except subprocess.TimeoutExpired:
        done = False
    for stream in (child.stdout, child.stderr):
        if stream is not None:
            stream.close()
    return done


def run_with_timeout(
    argv: Sequence[str],
    timeout: float,
    cancel: Optional[threading.Event] = None,
    stderr: Stream = subprocess.STDOUT,
    input: Optional[bytes] = None,
    env: Optional[Mapping[str, str]] = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv to its end; at the timeout (or on cancel) its whole process group is ended (no stray children).
    input: its stdin (else none); env: its whole environment (else ours).

    Raises subprocess.TimeoutExpired (with what it printed) or Cancelled; never waits on
    an ended child past KILL_WAIT."""
    extra: Dict[str, Any] = {} if env is None else {"env": dict(env)}
    child = start(argv, stderr=stderr, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL, **extra)
    deadline = time.monotonic() + timeout
    cancelled = False
    data = input
    while True:
        step = max(0.0, min(0.2, deadline - time.monotonic()))
        try:
            # retrying after a timeout loses no output; the input is given once (the retry goes on sending it)
            out, _ = child.communicate(input=data, timeout=step)
            return subprocess.CompletedProcess(list(argv), child.returncode, out, None)
        except subprocess.TimeoutExpired:
            data = None
            cancelled = cancel is not None and cancel.is_set()
            if not cancelled and time.monotonic() < deadline:
                continue
        break
    _kill_group(child)
    try:
        out, _ = child.communicate(timeout=KILL_WAIT)
    except subprocess.TimeoutExpired:  # stuck in the kernel: left to be reaped later
        out = b""
        reap(child)
    if cancelled:
        raise Cancelled(" ".join(argv))
    raise subprocess.TimeoutExpired(list(argv), timeout, output=out)
