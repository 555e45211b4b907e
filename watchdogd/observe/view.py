"""What one scan saw of the process table, and what follows from it alone: who names which probe dir, roles, zombies."""

from __future__ import annotations

import os
from typing import AbstractSet, Dict, FrozenSet, List, Optional, Sequence, Set

from ..emulators import is_emulator
from ..model import Defunct, Probe, Process, Role
from ..safety import Protected, probe_dir_named
from .procfs import ProcFS

DIRS_PER_PROCESS = 2  # probe dirs one process's command line may name and count for


class ProcessView:
    """The process table of one scan, shared by the reads of every probe dir in it.

    Which processes name which probe dir is indexed once a scan (each process counts for at
    most DIRS_PER_PROCESS dirs: a probe names its own dir twice, -qmp and -pidfile, so a 4 KiB
    command line naming 80 dirs costs 2), and a dir's members are looked up there, never by
    walking the whole table once per dir.

    placed: the pids in libvirt's own units where systemd runs (process_table); a process outside them names no
    probe dir here, whatever its command line says.
    """

    def __init__(
        self,
        table: Dict[int, Process],
        protected: Protected,
        now: float,
        uptime: float,
        bases: Sequence[str] = (),
        placed: Optional[AbstractSet[int]] = None,
    ):
        self.table = table
        self.placed = placed
        self.protected = protected
        self.now = now
        self.uptime = uptime
        self.naming: Dict[str, List[Process]] = {}  # probe dir -> the live processes whose command line names it
        # processes whose command line did not answer, by uid, the newest first: they may name any dir of their uid
        self.unread: Dict[Optional[int], List[Process]] = {}
        known = frozenset(bases)
        for p in table.values():
            if p.is_zombie or self.why_outside(p.pid):
                continue
            if p.cmdline_unread:
                self.unread.setdefault(p.uid, []).append(p)
            dirs: List[str] = []
            for arg in p.cmdline:
                d = probe_dir_named(arg, known)
                if d is not None and d not in dirs:
                    dirs.append(d)
                    if len(dirs) >= DIRS_PER_PROCESS:
                        break
            for d in dirs:
                self.naming.setdefault(d, []).append(p)
        for unread in self.unread.values():
            unread.sort(key=lambda p: -p.start_boot_s)

    def why_outside(self, pid: int) -> Optional[str]:
        """Why pid can be no probe's member before its command line is looked at: outside libvirt's units."""
        if self.placed is None or pid in self.placed:
            return None
        return "it is outside libvirt's own unit cgroup, where the kernel keeps every probe libvirt starts"

    def named_dirs(self, base: str, cap: int) -> FrozenSet[str]:
        """Names of the qmp dirs under base that a live process names, always read: at most `cap`, those a libvirt
        daemon's child names first (a flood of processes naming dirs cannot push a genuine probe out)."""
        libvirt = self.protected.libvirt_pids
        named = [
            (not any(p.ppid in libvirt for p in procs), d)
            for d, procs in self.naming.items()
            if os.path.dirname(d) == base
        ]
        return frozenset(os.path.basename(d) for _, d in sorted(named)[:cap])

    def trusted_parents(self, owner: int) -> FrozenSet[int]:
        """Live libvirt daemons that run as root or as `owner` (a session's user): their children are libvirt's
        probes."""
        live = (self.table.get(pid) for pid in self.protected.libvirt_pids)
        return frozenset(p.pid for p in live if p is not None and not p.is_zombie and p.uid in (0, owner))


def role_of(proc: Process, pidfile_pid: Optional[int], members: Set[int], libvirt_pids: AbstractSet[int]) -> Role:
    """A live member's part in the probe: the pidfile's daemon, libvirt's first child, or what re-parenting left."""
    if proc.pid == pidfile_pid:
        return Role.DAEMON
    if proc.ppid in libvirt_pids:
        return Role.FIRST
    if proc.ppid in members:
        return Role.UNKNOWN
    return Role.DAEMON  # re-parented to init or a subreaper: what the daemon looks like


def defunct(view: ProcessView, probes: Sequence[Probe], names: Sequence[str], proc: ProcFS) -> List[Defunct]:
    """Every emulator zombie, and whose it is: a probe's (its intermediate), libvirt's, init's or another's."""
    table, libvirt_pids = view.table, view.protected.libvirt_pids
    owner: Dict[int, str] = {}
    for probe in probes:
        for member in probe.members:
            owner[member.process.pid] = probe.path
    found: List[Defunct] = []
    for zombie in table.values():
        if not zombie.is_zombie or not is_emulator(zombie, names):
            continue
        parent = table.get(zombie.ppid)
        if zombie.ppid in owner and zombie.ppid != zombie.pid:
            kind, probe_path = "probe", owner[zombie.ppid]
        elif zombie.ppid in libvirt_pids:
            kind, probe_path = "libvirt", None
        elif zombie.ppid == 1:
            kind, probe_path = "init", None
        else:
            kind, probe_path = "other", None
        if parent is None and zombie.ppid > 1:
            parent = proc.process(zombie.ppid)
        found.append(
            Defunct(
                zombie=zombie,
                parent=parent,
                parent_kind=kind,
                probe_path=probe_path,
                age_s=max(0.0, view.uptime - zombie.start_boot_s),
            )
        )
    return found
