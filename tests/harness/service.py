"""`kvm-watchdog run` as a real process, and a real sd_notify socket to hear it on."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import psutil

from .journald import read_journal
from .wait import wait_for

REPO = Path(__file__).resolve().parent.parent.parent
# The command as installed: the console script beside this interpreter (pip puts it
# there), never `python -m watchdogd`. Its comm is `kvm-watchdog`, as on a host:
# the name the guest rule once mistook for an emulator's.
COMMAND = str(Path(sys.executable).parent / "kvm-watchdog")


def command() -> str:
    """The installed console script; an error that says how to get it when it is missing."""
    if not os.access(COMMAND, os.X_OK):
        raise RuntimeError(
            f"{COMMAND} is missing: install the package into this Python (make venv, or pip install -e .)"
        )
    return COMMAND


class NotifyListener:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET; keeps every message with its arrival time."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: List[Tuple[float, Dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def with_key(self, key: str, since: float = 0.0) -> List[Tuple[float, Dict[str, str]]]:
        return [(t, m) for t, m in list(self.messages) if key in m and t >= since]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


class RunningDaemon:
    """kvm-watchdog run -c CONFIG, with its stdout and stderr kept in files."""

    def __init__(
        self,
        config: str,
        workdir: Path,
        env: Optional[Dict[str, str]] = None,
        wrapper: Sequence[str] = (),
        args: Sequence[str] = (),
    ):
        self.config = config
        self.stdout_path = workdir / "daemon.out"
        self.stderr_path = workdir / "daemon.err"
        full_env = dict(os.environ)
        full_env.pop("NOTIFY_SOCKET", None)
        full_env.update(env or {})
        self.started_at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() - 1))
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [*wrapper, command(), "-c", config, "run", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=full_env,
                cwd=str(REPO),
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)

    # ---- what it said ------------------------------------------------------------------
    def journal(self, *matches: str) -> List[Dict[str, Any]]:
        return read_journal(f"_PID={self.pid}", "SYSLOG_IDENTIFIER=kvm-watchdog", *matches, since=self.started_at)

    def journal_events(self, kind: str, **fields: str) -> List[Dict[str, Any]]:
        return [e for e in self.journal(f"KVMWD_EVENT={kind}") if all(e.get(k) == v for k, v in fields.items())]

    def stderr_events(self) -> List[Dict[str, Any]]:
        out = []
        for line in self.stderr_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def wait_journal(self, kind: str, timeout: float = 30, count: int = 1, **fields: str) -> List[Dict[str, Any]]:
        def enough() -> Optional[List[Dict[str, Any]]]:
            events = self.journal_events(kind, **fields)
            return events if len(events) >= count else None

        return wait_for(
            enough,
            timeout,
            f"{count} {kind} {fields} event(s) in the journal",
        )

    def wait_stderr(self, kind: str, timeout: float = 30, **fields: str) -> List[Dict[str, Any]]:
        def found() -> List[Dict[str, Any]]:
            return [
                e
                for e in self.stderr_events()
                if e.get("KVMWD_EVENT") == kind and all(e.get(k) == v for k, v in fields.items())
            ]

        return wait_for(found, timeout, f"a {kind} {fields} event on stderr")

    def children(self) -> List[int]:
        """Its child processes, from every one of its threads (read with psutil, not the package's own /proc code)."""
        try:
            return [c.pid for c in psutil.Process(self.pid).children()]
        except psutil.Error:
            return []
