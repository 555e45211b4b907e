"""Which processes are emulators, and which emulators are running guests: one rule, from what the kernel says.

A name is an emulator's when a configured name (detect.emulator_names) is one of
its *words* (``qemu-system-x86`` has the words qemu, system, x86), never a mere
substring, and the process is no kernel thread (PF_KTHREAD in its stat flags:
``kvm-pit/1234`` and ``kvm-nx-lpage-recovery`` are the kernel's own).

A running guest is what keeps a socket-activated libvirt from idling out, and so
what lets a latency call go out without disturbing it (observe.latency). It is an
emulator process that:
- is no probe's member, not the watchdog itself and none of its children;
- where systemd runs, lives in ``machine.slice`` (libvirt puts every guest in a
  ``machine-qemu-….scope``), a cgroup no unprivileged user can move into: the
  kernel placed it, and its command line is not read;
- elsewhere, carries libvirt's ``-name guest=NAME`` (every domain libvirt starts
  does; an emulator started by hand is no domain of libvirt's and keeps nothing awake).
The watchdog's own process (comm ``kvm-watchdog``, the console script's name) has
the word ``kvm``, and is none of those. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from typing import AbstractSet, Iterable, Optional, Sequence, Tuple

from .model import Process

PF_KTHREAD = 0x00200000  # include/linux/sched.h: a kernel thread
_WORD = re.compile(r"[a-z0-9]+")
GUEST_NAME_ARG = "-name"
GUEST_NAME_PREFIX = "guest="
MACHINE_SLICE = "machine.slice"


def words(text: str) -> Tuple[str, ...]:
    """
    >>> words("qemu-system-x86"), words("kvm-pit/1234")
    (('qemu', 'system', 'x86'), ('kvm', 'pit', '1234'))
    """
    return tuple(_WORD.findall(text.lower()))


def is_emulator_name(comm: str, emulator_names: Iterable[str]) -> bool:
    """A configured name is a word (or a run of words) of comm.

    >>> names = ("qemu", "kvm")
    >>> [is_emulator_name(c, names) for c in ("qemu-system-x86", "qemu-kvm", "kvm", "qemu-system-aar")]
    [True, True, True, True]
    >>> [is_emulator_name(c, names) for c in ("python3", "sleep", "myqemuish", "kvmx")]
    [False, False, False, False]
    """
    lowered = comm.lower()
    have: Tuple[str, ...] = ()
    for name in emulator_names:
        want = words(name)
        if not want or want[0] not in lowered:
            continue  # not even a substring: the common case on a full walk of /proc costs no tokenizing
        have = have or words(lowered)
        n = len(want)
        if any(have[i : i + n] == want for i in range(len(have) - n + 1)):
            return True
    return False


def is_emulator(proc: Process, emulator_names: Iterable[str]) -> bool:
    """An emulator's process (or zombie): its name by the word rule, and no kernel thread."""
    return not proc.kthread and is_emulator_name(proc.comm, emulator_names)


def keep_guest_arg(arg: str) -> bool:
    """The command-line arguments the scan keeps to tell a guest (libvirt's ``-name guest=NAME``)."""
    return arg == GUEST_NAME_ARG or arg.startswith(GUEST_NAME_PREFIX)


def names_guest(cmdline: Sequence[str]) -> bool:
    """
    >>> names_guest(("-name", "guest=vm1,debug-threads=on")), names_guest(("-name", "x")), names_guest(())
    (True, False, False)
    """
    return GUEST_NAME_ARG in cmdline and any(a.startswith(GUEST_NAME_PREFIX) for a in cmdline)


def cgroup_path(text: str) -> Tuple[str, ...]:
    """The components of a process's systemd cgroup, from /proc/PID/cgroup (v2's ``0::`` line, else v1's name=systemd).

    >>> cgroup_path("0::/machine.slice/machine-qemu\\\\x2d1\\\\x2dvm1.scope/libvirt/emulator\\n")
    ('machine.slice', 'machine-qemu\\\\x2d1\\\\x2dvm1.scope', 'libvirt', 'emulator')
    >>> cgroup_path("12:pids:/x\\n1:name=systemd:/system.slice/libvirtd.service\\n0::/\\n")
    ('system.slice', 'libvirtd.service')
    >>> cgroup_path("garbage")
    ()
    """
    unified: Tuple[str, ...] = ()
    named: Tuple[str, ...] = ()
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        comps = tuple(c for c in parts[2].split("/") if c)
        if parts[0] == "0" and parts[1] == "":
            unified = comps
        elif parts[1] == "name=systemd":
            named = comps
    return unified or named  # hybrid hosts track units in name=systemd, and mirror them in an empty-rooted unified


def in_machine_slice(components: Sequence[str]) -> bool:
    """The host's own machine.slice, where libvirt puts every guest: the first component only, never a user
    manager's (user.slice/user-1000.slice/user@1000.service/machine.slice is any local user's to fill).

    >>> in_machine_slice(("machine.slice", "machine-qemu\\\\x2d1\\\\x2dvm1.scope"))
    True
    >>> in_machine_slice(("system.slice", "x.service"))
    False
    >>> in_machine_slice(("user.slice", "user-1000.slice", "user@1000.service", "machine.slice", "vm.scope"))
    False
    """
    return len(components) > 0 and components[0] == MACHINE_SLICE


def is_libvirt_unit(components: Sequence[str], daemons: Iterable[str]) -> bool:
    """A libvirt daemon's own service unit (libvirtd.service, virtqemud.service) is the cgroup's last component.

    >>> is_libvirt_unit(("system.slice", "virtqemud.service"), ("libvirtd", "virtqemud"))
    True
    >>> is_libvirt_unit(("user.slice", "user-1000.slice", "session-3.scope"), ("libvirtd",))
    False
    """
    return len(components) > 0 and components[-1] in {f"{d}.service" for d in daemons}


def why_not_guest(
    proc: Process,
    emulator_names: Iterable[str],
    excluded: AbstractSet[int],
    own_pid: int,
    cgroup: Optional[Tuple[str, ...]],
) -> Optional[str]:
    """None when proc is a running guest of libvirt's, else why not.

    excluded: probe members and libvirt daemons. cgroup: the process's cgroup path
    where systemd runs (None without systemd: the command line decides).
    """
    if proc.is_zombie:
        return "a zombie"
    if proc.kthread:
        return "a kernel thread"
    if not is_emulator_name(proc.comm, emulator_names):
        return f"{proc.comm!r} is not an emulator's name"
    if own_pid in (proc.pid, proc.ppid):
        return "the watchdog itself or its child"
    if proc.pid in excluded:
        return "a probe's member or a libvirt daemon"
    if cgroup is not None:  # the kernel's word: its command line is not read (nor needed)
        return None if in_machine_slice(cgroup) else "not in machine.slice, where libvirt puts every guest"
    if not names_guest(proc.cmdline):
        return "no -name guest=... on its command line: no domain of libvirt's"
    return None
