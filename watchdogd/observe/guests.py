"""libvirt's running guests, counted: a host with one never idles libvirt out, so the latency call may go out."""

from __future__ import annotations

from typing import AbstractSet, Dict, Iterable, Optional, Sequence, Tuple

from ..emulators import MACHINE_SLICE, is_emulator, why_not_guest
from ..model import Probe, Process
from .cgroupfs import slice_pids
from .procfs import ProcFS


class Guests:
    """The guests' QEMUs (emulators.why_not_guest): all of them on full walks, and between them the new ones the
    kernel placed in machine.slice (libvirt daemonizes its guests, so they are not its children: cgroupfs says
    where they are), while the known ones are dropped as soon as they are gone, so a host whose last guest
    stopped is idle at once."""

    def __init__(self, proc: ProcFS, emulator_names: Tuple[str, ...], own_pid: int):
        self.proc = proc
        self.names = emulator_names
        self.own_pid = own_pid
        self.known: Dict[int, float] = {}  # pid -> start time

    def update(
        self, table: Dict[int, Process], walked: bool, probes: Sequence[Probe], libvirt_pids: AbstractSet[int]
    ) -> None:
        excluded = {m.process.pid for p in probes for m in p.members} | set(libvirt_pids)
        if walked:
            self.known = self._found(table.values(), excluded)
            return
        for pid, start in list(self.known.items()):
            p = table.get(pid) or self.proc.process(pid)
            if p is None or p.is_zombie or p.start_boot_s != start:
                del self.known[pid]
        placed = slice_pids(MACHINE_SLICE) if self.proc.systemd and self.proc.root == "/proc" else None
        # placed by the kernel: no command line read (a hung guest's can block)
        new = [
            table.get(pid) or self.proc.process(pid, argv=False)
            for pid in sorted(placed or ())
            if pid not in self.known
        ]
        self.known.update(self._found((p for p in new if p is not None), excluded))

    def _found(self, processes: Iterable[Process], excluded: AbstractSet[int]) -> Dict[int, float]:
        found: Dict[int, float] = {}
        for p in processes:
            cgroup: Optional[Tuple[str, ...]] = None
            if self.proc.systemd:
                if p.is_zombie or not is_emulator(p, self.names):
                    continue  # the cheap checks first: the cgroup is read only for what passes them
                cgroup = self.proc.cgroup(p.pid) or ()
            if why_not_guest(p, self.names, excluded, self.own_pid, cgroup) is None:
                found[p.pid] = p.start_boot_s
        return found
