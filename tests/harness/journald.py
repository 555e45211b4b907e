"""The real systemd-journald, standalone (there is no systemd PID 1 on these machines).

If a journald already answers on the standard socket it is used as it is, and it
is never stopped (it is not ours). Otherwise one is started here, as our child, and
only that one is ever stopped or restarted, by PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from typing import Any, Dict, List, Optional

from .wait import wait_for

JOURNALD = next(
    (p for p in ("/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald") if os.path.exists(p)),
    "/lib/systemd/systemd-journald",
)
SOCKET = "/run/systemd/journal/socket"


def journal_answers() -> bool:
    """True when a datagram to the journal socket is accepted (a live journald)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(SOCKET)
        return True
    except OSError:
        return False


class Journald:
    def __init__(self) -> None:
        self.child: Optional[subprocess.Popen[bytes]] = None
        self.owned = False

    def ensure(self, timeout: float = 20) -> Journald:
        if journal_answers():
            return self
        self.owned = True
        self.start(timeout)
        return self

    def start(self, timeout: float = 20) -> None:
        assert self.owned, "never start a second journald next to one that is not ours"
        os.makedirs(os.path.dirname(SOCKET), exist_ok=True)
        self.child = subprocess.Popen(
            [JOURNALD],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(journal_answers, timeout, "journald to answer on its socket")

    def stop(self, timeout: float = 20) -> None:
        """Stop the journald we started (by PID); its socket stays behind, refusing, as after a crash."""
        assert self.owned and self.child is not None
        self.child.send_signal(signal.SIGTERM)
        self.child.wait(timeout)
        self.child = None
        wait_for(lambda: not journal_answers(), timeout, "the journal socket to refuse")

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        if self.owned and self.child is not None:
            self.stop()


def read_journal(*matches: str, since: Optional[str] = None) -> List[Dict[str, Any]]:
    """Entries matching `FIELD=value` matches (ANDed), oldest first."""
    argv = ["journalctl", "--no-pager", "-o", "json", *matches]
    if since:
        argv += ["--since", since]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
