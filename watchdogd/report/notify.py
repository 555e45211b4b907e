"""sd_notify: READY, STATUS, WATCHDOG and friends, to the socket systemd names in NOTIFY_SOCKET.

Written out (the protocol is one datagram of KEY=VALUE lines) rather than taken
from systemd-python's daemon.notify, because that one reads the process's global
environment; this one takes the environment it is given, so a test can point a
daemon at its own socket, and `unset` works without touching os.environ.

A send never blocks: the socket is non-blocking, and a datagram the reader has
no room for is not waited on. The fields it carried are kept (the latest value of
each) and go out with the next send, so a READY=1 that met a full queue is not
lost, and the loop never stalls on systemd (seen: a slow reader made a stop take 30 s).
"""

from __future__ import annotations

import os
import socket
from typing import Dict, Mapping, Optional

from ..printable import printable


class Notifier:
    def __init__(self, environ: Mapping[str, str]):
        path = environ.get("NOTIFY_SOCKET", "")
        if path.startswith("@"):
            path = "\0" + path[1:]  # an abstract socket
        self.address: Optional[str] = path or None
        self.watchdog_usec = _watchdog_usec(environ)
        self._unsent: Dict[str, str] = {}  # fields of datagrams that met a full queue
        self._sock: Optional[socket.socket] = None

    @property
    def watchdog_interval(self) -> Optional[float]:
        """Seconds between WATCHDOG=1 pings (half of what systemd allows), or None."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def send(self, **fields: str) -> bool:
        """One notification, e.g. send(READY="1", STATUS="..."); False when it could not be sent."""
        if self.address is None:
            return False
        pending = dict(self._unsent)
        pending.update(fields)
        if "WATCHDOG" in pending and "WATCHDOG" not in fields:
            del pending["WATCHDOG"]  # a stale ping is no news: only the current one counts
        # one field a line: a newline in a value (a file name in a STATUS line) would add a field of its own
        message = "\n".join(f"{k}={printable(v)}" for k, v in pending.items()).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            self._sock.sendto(message, self.address)
        except OSError:  # EAGAIN: the reader is slow; ENOENT/ECONNREFUSED: systemd is not there
            self._unsent = {k: v for k, v in pending.items() if k != "WATCHDOG"}
            return False
        self._unsent = {}
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def ready(self, status: str) -> bool:
        return self.send(READY="1", STATUS=status, MAINPID=str(os.getpid()))

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG="1")

    def reloading(self) -> bool:
        return self.send(RELOADING="1", STATUS="reloading the config")

    def stopping(self) -> bool:
        return self.send(STOPPING="1", STATUS="stopping")


def _watchdog_usec(environ: Mapping[str, str]) -> Optional[int]:
    """WATCHDOG_USEC when it is meant for this process (WATCHDOG_PID unset or ours).

    >>> _watchdog_usec({"WATCHDOG_USEC": "30000000"})
    30000000
    >>> _watchdog_usec({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    True
    >>> _watchdog_usec({"WATCHDOG_USEC": "soon"}) is None
    True
    """
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid is not None and pid != str(os.getpid()):
        return None
    return usec if usec > 0 else None
