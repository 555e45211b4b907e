"""The one rule for which processes belong to a probe, and so may ever be signalled.

A process belongs to the probe in dir D only if all of these hold:
- it is not PID 1, not the watchdog, not a libvirt daemon;
- its name is an emulator's (detect.emulator_names);
- its command line names D itself (``-pidfile D/qmp.pid`` or ``-qmp unix:D/...``);
- it started no earlier than D was made, give or take START_SLACK_S.

The scan uses it to decide membership; the act step checks it again, on a fresh
read of the process, right before any signal. Pure functions, no I/O.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import AbstractSet, Iterable, Optional, Sequence

from .model import Process

# /proc start times tick at 1/CLK_TCK s, and without a birth time the dir's time is
# when its first file appeared: a second covers both, and nothing older gets in.
START_SLACK_S = 1.0


@dataclass(frozen=True)
class Protected:
    """Processes no probe can ever claim."""

    own_pid: int
    libvirt_pids: AbstractSet[int]

    def why(self, pid: int) -> Optional[str]:
        if pid <= 1:
            return "it is PID 1" if pid == 1 else "not a process id"
        if pid == self.own_pid:
            return "it is the watchdog itself"
        if pid in self.libvirt_pids:
            return "it is a libvirt daemon"
        return None


def names_dir(cmdline: Sequence[str], probe_dir: str) -> bool:
    """True when an argument is a path directly inside probe_dir.

    >>> d = "/var/lib/libvirt/qemu/qmp-BGQCH3"
    >>> names_dir(["qemu", "-qmp", "unix:" + d + "/qmp.monitor,server,nowait"], d)
    True
    >>> names_dir(["qemu", "-pidfile", d + "/qmp.pid"], d)
    True
    >>> names_dir(["qemu", "-pidfile", "/var/lib/libvirt/qemu/qmp-OTHER1/qmp.pid"], d)
    False
    >>> names_dir(["sleep", "1000"], d), names_dir(["x", d + "/../qmp-OTHER1/qmp.pid"], d)
    (False, False)
    """
    for arg in cmdline:
        path = arg[5:].split(",", 1)[0] if arg.startswith("unix:") else arg
        if os.path.dirname(path) == probe_dir:
            return True
    return False


def is_emulator_name(comm: str, emulator_names: Iterable[str]) -> bool:
    """
    >>> is_emulator_name("qemu-system-x86", ["qemu", "kvm"]), is_emulator_name("sleep", ["qemu"])
    (True, False)
    """
    lowered = comm.lower()
    return any(name in lowered for name in emulator_names)


def why_not_member(
    proc: Process,
    probe_dir: str,
    dir_made_wall: float,
    boot_wall: float,
    protected: Protected,
    emulator_names: Iterable[str],
) -> Optional[str]:
    """None when proc belongs to the probe in probe_dir, else the reason it does not."""
    reason = protected.why(proc.pid)
    if reason:
        return reason
    if proc.is_zombie:
        return "it is a zombie (only its parent can reap it)"
    if not is_emulator_name(proc.comm, emulator_names):
        return f"its name {proc.comm!r} is not an emulator's"
    if not names_dir(proc.cmdline, probe_dir):
        return "its command line does not name this probe's dir"
    started_wall = boot_wall + proc.start_boot_s
    if started_wall < dir_made_wall - START_SLACK_S:
        return f"it started {dir_made_wall - started_wall:.1f}s before the dir was made"
    return None
