"""Which processes one scan reads: all of /proc now and then; between walks, libvirt's own and what the kernel placed.

A walk of /proc costs a read per process on the host. Between walks a scan reads libvirt's daemons and their
children (a probe's first process and its intermediate, a zombie when hung) and, where systemd runs, the
processes in the cgroups of libvirt's own units (cgroupfs): a probe's daemon re-parents away from libvirt but
never leaves its unit, nor does a probe whose daemon died. There a probe dir costs no walk, however many
processes the host runs, and a process outside those cgroups is no probe's member, whatever its command line
names (no unprivileged uid can enter them). Without systemd (or with a libvirt daemon outside its units) a
probe dir means a walk. A libvirt daemon in another PID namespace (a container's, KubeVirt's per-VM one) is that
container's, not this host's: it is never counted, so it costs no walk and proves no probe.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, Optional, Set

from ..config import Config
from ..emulators import is_emulator_name, is_libvirt_unit
from ..fsafe import open_path_nofollow
from ..model import Process
from ..safety import QMP_DIR
from .cgroupfs import cgroup_pids
from .procfs import ProcFS

# With no probe dir anywhere (or libvirt's units to read), a scan reads no more than libvirt's own processes; the
# whole of /proc is walked at least this often even then (a safety net: nothing an idle host can show needs it)
# (and always when a known libvirt daemon is gone, or an action is about to act).
FULL_WALK_EVERY = 600.0


@dataclass(frozen=True)
class Table:
    """What one scan read: the interesting processes, whether all of /proc was walked, and the pids in libvirt's
    units (None where that cannot be told)."""

    processes: Dict[int, Process]
    walked: bool
    placed: Optional[FrozenSet[int]]


class ProcessTable:
    """The choice between a walk and libvirt's own, and the libvirt daemons the last walk found (the scanner's lock
    guards it)."""

    def __init__(self, config: Config, proc: ProcFS, mono: Callable[[], float] = time.monotonic):
        self.config = config
        self.proc = proc
        self.mono = mono
        self.full_walks = 0
        self.last_walk: Optional[float] = None
        self.libvirt: Dict[int, float] = {}  # libvirt daemons seen by the last walk: pid -> start time
        names = config.detect.emulator_names
        self.daemons = frozenset(config.detect.libvirt_daemons)
        self.interesting: Callable[[str], bool] = lambda comm: comm in self.daemons or is_emulator_name(comm, names)

    def adopt(self, old: ProcessTable) -> None:
        self.libvirt = dict(old.libvirt)
        self.last_walk = old.last_walk

    def read(self, full: Optional[bool]) -> Table:
        """full=True walks all of /proc; None chooses (see FULL_WALK_EVERY)."""
        now = self.mono()
        placed = None if full else self.placed()  # asked for a walk: nothing to choose, nothing to add
        if full is None:
            full = (
                self.last_walk is None
                or not self.libvirt
                or now - self.last_walk >= FULL_WALK_EVERY
                or (placed is None and self._any_probe_dir())
            )
        table: Dict[int, Process] = {}
        if not full:
            table = self.proc.descendants(tuple(self.libvirt), self.interesting)
            full = any(_not_the_same(table.get(pid), start) for pid, start in self.libvirt.items())
            for pid in sorted((placed or frozenset()) - table.keys()):
                p = self.proc.process(pid)
                if p is not None and not p.kthread and self.interesting(p.comm):
                    table[pid] = p
        if full:
            table = self.proc.scan(self.interesting)
            self.last_walk = now
            self.full_walks += 1
        uids = self._daemon_uids()
        daemons = (
            p
            for p in table.values()
            if p.comm in self.daemons and not p.is_zombie and p.uid in uids and self.proc.shares_pid_ns(p.pid)
        )
        self.libvirt = {p.pid: p.start_boot_s for p in daemons}
        return Table(table, bool(full), self.placed() if full else placed)

    def placed(self) -> Optional[FrozenSet[int]]:
        """The pids the kernel placed in libvirt's own units' cgroups; None where that cannot be told: systemd does
        not run, or a libvirt daemon runs outside those units (started by hand).

        root's libvirt: system.slice/libvirtd.service and virtqemud.service, whether or not a daemon runs now (its
        units use KillMode=process: a probe outlives its daemon there). A session libvirt: the cgroup of each of
        its known daemons, when that is a unit of its own under its user's manager."""
        if not (self.proc.systemd and self.proc.root == "/proc"):
            return None
        if not self.config.libvirt.session_dirs:
            units = [("system.slice", f"{d}.service") for d in sorted(self.daemons)]
            if any(tuple((self.proc.cgroup(pid) or ())[:2]) not in units for pid in self.libvirt):
                return None
            return frozenset(pid for unit in units for pid in cgroup_pids(unit) or ())
        if not self.libvirt:
            return None
        placed: Set[int] = set()
        for pid in self.libvirt:
            unit = self.proc.cgroup(pid)
            found = cgroup_pids(unit) if unit and is_libvirt_unit(unit, self.daemons) else None
            if found is None or pid not in found:
                return None
            placed |= found
        return frozenset(placed)

    def _daemon_uids(self) -> FrozenSet[int]:
        """Who a libvirt daemon may run as: root, or (libvirt.session_dirs) the owner of a probe base.

        Anyone can name a process `libvirtd`; one of another uid's neither makes "libvirt is running"
        true nor proves a probe."""
        uids = {0}
        if self.config.libvirt.session_dirs:
            for base in self.config.libvirt.probe_dirs:
                try:
                    uids.add(os.stat(base, follow_symlinks=False).st_uid)
                except OSError:
                    continue
        return frozenset(uids)

    def _any_probe_dir(self) -> bool:
        for base in self.config.libvirt.probe_dirs:
            try:
                fd = open_path_nofollow(base)
            except OSError:
                continue
            try:
                with os.scandir(fd) as entries:
                    if any(QMP_DIR.fullmatch(e.name) for e in entries):
                        return True
            except OSError:
                continue
            finally:
                os.close(fd)
        return False


def _not_the_same(now: Optional[Process], start: float) -> bool:
    """A libvirt daemon seen before is gone, a zombie, or its PID names another process now."""
    return now is None or now.is_zombie or now.start_boot_s != start
