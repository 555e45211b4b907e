#!/usr/bin/env python3
"""A subreaper that runs one libvirtd, as systemd would on a real host.

- PR_SET_CHILD_SUBREAPER: a probe's daemon re-parents here, and every orphan is
  reaped (PID 1 on the CI machines reaps nothing);
- SIGUSR1 restarts libvirtd, like `systemctl restart libvirtd` with KillMode=process:
  only libvirtd is stopped, its probe children stay;
- SIGHUP starts libvirtd again if it died (a test killed it -9);
- SIGTERM stops libvirtd and exits;
- libvirtd's current pid is written to PIDFILE (atomically), "0" while it is down.

Usage: supervisor.py PIDFILE -- COMMAND...
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from typing import List, Optional

PR_SET_CHILD_SUBREAPER = 36


def write_pid(path: str, pid: int) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{pid}\n")
    os.replace(tmp, path)


class Supervisor:
    def __init__(self, pidfile: str, argv: List[str]):
        self.pidfile = pidfile
        self.argv = argv
        self.child: Optional[subprocess.Popen[bytes]] = None
        self.restart = False
        self.stop = False
        self.start_again = False

    def start_child(self) -> None:
        self.child = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL)
        write_pid(self.pidfile, self.child.pid)

    def stop_child(self, timeout: float = 15.0) -> None:
        if self.child is None:
            return
        write_pid(self.pidfile, 0)
        self.child.terminate()
        deadline = time.monotonic() + timeout
        while self.child.poll() is None and time.monotonic() < deadline:
            self.reap_orphans()
            time.sleep(0.02)
        if self.child.poll() is None:
            self.child.kill()
            self.child.wait()
        self.child = None

    def reap_orphans(self) -> None:
        """Reap every exited child that is not libvirtd (re-parented probe processes)."""
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.child is not None and pid == self.child.pid:
                self.child.returncode = -1  # libvirtd died on its own
                write_pid(self.pidfile, 0)
                self.child = None

    def run(self) -> int:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)
        signal.signal(signal.SIGUSR1, lambda *_: setattr(self, "restart", True))
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stop", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "stop", True))
        signal.signal(signal.SIGHUP, lambda *_: setattr(self, "start_again", True))
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the sleep below
        self.start_child()
        while not self.stop:
            self.reap_orphans()  # first: a libvirtd killed just before SIGHUP is noticed gone
            if self.restart:
                self.restart = False
                self.stop_child()
                self.start_child()
            if self.start_again:
                self.start_again = False
                if self.child is None:
                    self.start_child()
            self.reap_orphans()
            time.sleep(0.1)  # a signal ends it early
        self.stop_child()
        self.reap_orphans()
        return 0


def main(argv: List[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write(__doc__ or "")
        return 2
    return Supervisor(argv[0], argv[2:]).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
