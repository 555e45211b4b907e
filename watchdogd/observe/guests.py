"""libvirt's running guests, counted: a host with one never idles libvirt out, so the latency call may go out."""

from __future__ import annotations

from typing import AbstractSet, Dict, Sequence, Tuple

from ..emulators import why_not_guest
from ..model import Probe, Process
from .procfs import ProcFS


class Guests:
    """The guests' QEMUs (emulators.why_not_guest): found on full walks (guests live long), and between them the
    known ones dropped as soon as they are gone, so a host whose last guest stopped is idle at once."""

    def __init__(self, proc: ProcFS, emulator_names: Tuple[str, ...], own_pid: int):
        self.proc = proc
        self.names = emulator_names
        self.own_pid = own_pid
        self.known: Dict[int, float] = {}  # pid -> start time

    def update(
        self, table: Dict[int, Process], walked: bool, probes: Sequence[Probe], libvirt_pids: AbstractSet[int]
    ) -> None:
        if not walked:
            for pid, start in list(self.known.items()):
                p = table.get(pid) or self.proc.process(pid)
                if p is None or p.is_zombie or p.start_boot_s != start:
                    del self.known[pid]
            return
        excluded = {m.process.pid for p in probes for m in p.members} | set(libvirt_pids)
        found: Dict[int, float] = {}
        for p in table.values():
            if why_not_guest(p, self.names, excluded, self.own_pid, None) is not None:
                continue  # the cheap checks first: the cgroup is read only for what passes them
            if self.proc.systemd and why_not_guest(
                p, self.names, excluded, self.own_pid, self.proc.cgroup(p.pid) or ()
            ):
                continue
            found[p.pid] = p.start_boot_s
        self.known = found
