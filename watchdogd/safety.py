"""The one rule for which processes belong to a probe, and so may ever be signalled.

A process belongs to the probe in dir D only if all of these hold:
- it is not PID 1, not the watchdog, not a libvirt daemon;
- its name is an emulator's (detect.emulator_names, by the word rule of
  emulators.py; never a kernel thread);
- its command line names D itself (``-pidfile D/qmp.pid`` or ``-qmp unix:D/...``);
- it runs as the user that owns D (libvirt hands the dir to the uid the probe runs
  as; a dir the qemu user made can never claim root's processes, however it was
  renamed or backdated);
- it started no earlier than D was made, give or take START_SLACK_S.

The scan uses it to decide membership; the act step checks it again, on a fresh
read of the process, right before any signal. A process whose command line could not
be read is never a member; where it passes every rule but the name (may_be_member),
its dir is not stale. Pure functions, no I/O.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import AbstractSet, Callable, Iterable, Optional, Sequence

from .emulators import is_emulator, keep_guest_arg
from .model import Process

# The name libvirt gives a probe dir (g_mkdtemp's six characters).
QMP_DIR = re.compile(r"qmp-[A-Za-z0-9]{6}")

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
    return any(os.path.dirname(_arg_path(arg)) == probe_dir for arg in cmdline)


def _arg_path(arg: str) -> str:
    return arg[5:].split(",", 1)[0] if arg.startswith("unix:") else arg


def probe_dir_named(arg: str, bases: AbstractSet[str]) -> Optional[str]:
    """The probe dir an argument names (a path directly inside BASE/qmp-XXXXXX), or None.

    >>> probe_dir_named("unix:/b/qmp-AAAAAA/qmp.monitor,server=on", {"/b"})
    '/b/qmp-AAAAAA'
    >>> probe_dir_named("/b/qmp-AAAAAA/qmp.pid", {"/b"}), probe_dir_named("-daemonize", {"/b"})
    ('/b/qmp-AAAAAA', None)
    >>> probe_dir_named("/elsewhere/qmp-AAAAAA/qmp.pid", {"/b"}) is None
    True
    """
    d = os.path.dirname(_arg_path(arg))
    base, name = os.path.split(d)
    return d if base in bases and QMP_DIR.fullmatch(name) else None


def probe_arg_filter(bases: Iterable[str]) -> Callable[[str], bool]:
    """Keep only the command-line arguments that name a probe dir under one of `bases`, or a guest (``-name
    guest=``)."""
    known = frozenset(bases)
    return lambda arg: keep_guest_arg(arg) or probe_dir_named(arg, known) is not None


def why_not_member(
    proc: Process,
    probe_dir: str,
    dir_made_wall: float,
    boot_wall: float,
    protected: Protected,
    emulator_names: Iterable[str],
    owner_uid: Optional[int],
) -> Optional[str]:
    """None when proc belongs to the probe in probe_dir (owned by owner_uid), else the reason it does not."""
    reason = _why_not_emulator(proc, protected, emulator_names)
    if reason:
        return reason
    if not names_dir(proc.cmdline, probe_dir):
        return "its command line does not name this probe's dir"
    return _why_not_owned(proc, dir_made_wall, boot_wall, owner_uid)


def may_be_member(
    proc: Process,
    dir_made_wall: float,
    boot_wall: float,
    protected: Protected,
    emulator_names: Iterable[str],
    owner_uid: Optional[int],
) -> bool:
    """Whether a process whose command line could not be read (its memory-map lock held) passes every membership
    rule but the name: it may be the probe's. Never a member (nothing is done to it); its dir is not stale."""
    return (
        proc.cmdline_unread
        and _why_not_emulator(proc, protected, emulator_names) is None
        and _why_not_owned(proc, dir_made_wall, boot_wall, owner_uid) is None
    )


def _why_not_emulator(proc: Process, protected: Protected, emulator_names: Iterable[str]) -> Optional[str]:
    reason = protected.why(proc.pid)
    if reason:
        return reason
    if proc.is_zombie:
        return "it is a zombie (only its parent can reap it)"
    if not is_emulator(proc, emulator_names):
        return f"its name {proc.comm!r} is not an emulator's" if not proc.kthread else "it is a kernel thread"
    return None


def _why_not_owned(proc: Process, dir_made_wall: float, boot_wall: float, owner_uid: Optional[int]) -> Optional[str]:
    if owner_uid is None or proc.uid != owner_uid:
        return f"it runs as uid {proc.uid}, and the dir belongs to uid {owner_uid}"
    if not started_since(proc, dir_made_wall, boot_wall):
        return f"it started {dir_made_wall - (boot_wall + proc.start_boot_s):.1f}s before the dir was made"
    return None


def started_since(proc: Process, dir_made_wall: float, boot_wall: float) -> bool:
    """Whether proc started no earlier than the dir was made (give or take START_SLACK_S)."""
    return boot_wall + proc.start_boot_s >= dir_made_wall - START_SLACK_S
