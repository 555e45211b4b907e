"""Restarting libvirt: systemctl (or the operator's command), with a timeout, then verified.

Debian's libvirtd.service has KillMode=process: a restart does not end a leftover
probe's processes. Policies run in order, so kill_probe (first in the shipped
escalation) has ended them before this runs.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from typing import Callable, List, Optional, Sequence, Union

from ..children import Cancelled, run_with_timeout
from ..observe.latency import LatencyProbe
from .result import ActionResult

UNITS = ("libvirtd.service", "virtqemud.service")


def auto_command(systemctl: Optional[str] = None) -> Union[List[str], str]:
    """`systemctl restart` of the libvirt unit that is active; a reason string if none is."""
    systemctl = systemctl or shutil.which("systemctl")
    if not systemctl:
        return "restart_command is auto, but there is no systemctl"
    for unit in UNITS:
        try:
            r = run_with_timeout([systemctl, "is-active", "--quiet", unit], 10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            return [systemctl, "restart", unit]
    return f"restart_command is auto, but neither {' nor '.join(UNITS)} is active"


Connector = Callable[[float], LatencyProbe]  # a connect-only probe of libvirt, with this timeout


class LibvirtRestarter:
    def __init__(
        self,
        command: Union[str, Sequence[str]],
        timeout: float,
        connector: Connector,
        clock: Callable[[], float] = time.monotonic,
        cancel: Optional[threading.Event] = None,
    ):
        """connector: how to ask libvirt whether it answers again (the composition root makes it)."""
        self.command = command
        self.timeout = timeout
        self.connector = connector
        self.clock = clock
        self.cancel = cancel or threading.Event()

    def argv(self) -> Union[List[str], str]:
        return auto_command() if self.command == "auto" else list(self.command)

    def restart(self) -> ActionResult:
        argv = self.argv()
        if isinstance(argv, str):
            return ActionResult.failed(argv)
        started = self.clock()
        try:
            r = run_with_timeout(argv, self.timeout, self.cancel)
        except Cancelled:
            return ActionResult.failed(f"{' '.join(argv)} was ended: the watchdog is stopping")
        except subprocess.TimeoutExpired:
            return ActionResult.failed(f"{' '.join(argv)} did not finish within {self.timeout:g}s")
        except OSError as exc:
            return ActionResult.failed(f"cannot run {argv[0]}: {exc.strerror}")
        if r.returncode != 0:
            tail = (r.stdout or b"").decode("utf-8", "replace").strip()[-300:]
            return ActionResult.failed(f"{' '.join(argv)} exited {r.returncode}: {tail}")
        return self.verify(argv, started)

    def verify(self, argv: Sequence[str], started: float) -> ActionResult:
        """libvirt answers a cheap call again (retried until the restart timeout)."""
        deadline = started + self.timeout
        last = "no answer"
        while True:
            left = deadline - self.clock()
            result = self.connector(max(1.0, min(10.0, left))).run()
            if result.reachable:
                return ActionResult.ok(
                    f"ran {' '.join(argv)}; libvirt answers again after {self.clock() - started:.1f}s"
                )
            last = result.error or "no answer"
            if self.clock() >= deadline:
                return ActionResult.failed(f"ran {' '.join(argv)}, but libvirt does not answer: {last}")
            if self.cancel.wait(0.2):
                return ActionResult.failed(
                    f"ran {' '.join(argv)}; the watchdog is stopping, so libvirt was not seen to answer"
                )
