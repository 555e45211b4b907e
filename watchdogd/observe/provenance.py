"""Whether a probe is libvirt's, as the kernel tells it, and whether it is held (stopped or traced) rather than hung.

The qemu user owns every probe dir and can run processes of any name and argv: only what it
cannot fake counts. Where systemd runs, a member in libvirt's own unit cgroup; elsewhere, a
member that is (or was seen by an earlier scan as) a libvirt daemon's child, remembered per
process (pid and start time), never per dir.
"""

from __future__ import annotations

from typing import AbstractSet, Dict, Optional, Sequence, Tuple

from ..config import Config
from ..model import ProbeMember, Process
from .procfs import ProcFS

MEMBERS_CHECKED = 8  # members of a probe whose cgroup, stop and trace state is read (a probe has three)


class Provenance:
    """The proof of parentage, and its memory across scans (the scanner's lock guards it)."""

    def __init__(self, config: Config, proc: ProcFS):
        self.config = config
        self.proc = proc
        # without systemd: processes seen as a libvirt daemon's child, (pid, start time) -> how
        self.proven: Dict[Tuple[int, float], str] = {}

    def keep_only(self, alive: AbstractSet[Tuple[int, float]]) -> None:
        """Forget the proofs of processes no probe has any more."""
        self.proven = {k: v for k, v in self.proven.items() if k in alive}

    def proof(
        self, members: Sequence[ProbeMember], trusted: AbstractSet[int], table: Dict[int, Process]
    ) -> Optional[str]:
        """How the kernel says a member is libvirt's, per process; None: not proven.

        Where systemd runs (and not for a session libvirt, whose user runs its own units), a member in
        system.slice/libvirtd.service (or virtqemud.service): libvirt's units use KillMode=process, so
        its probes stay in its cgroup across a restart, and no unprivileged uid can move a process there.
        Elsewhere, a member that is (or was seen by an earlier scan as) a libvirt daemon's child."""
        if self.proc.systemd and not self.config.libvirt.session_dirs:
            units = {f"{d}.service" for d in self.config.detect.libvirt_daemons}
            for m in members[:MEMBERS_CHECKED]:
                if m.process.is_zombie:
                    continue
                cgroup = self.proc.cgroup(m.process.pid) or ()
                if len(cgroup) >= 2 and cgroup[0] == "system.slice" and cgroup[1] in units:
                    return f"{m.role.value} process {m.process.pid} runs in {cgroup[1]}'s cgroup"
            return None
        for m in members:
            key = (m.process.pid, m.process.start_boot_s)
            if m.process.ppid in trusted:
                parent = table[m.process.ppid]
                child = f"{m.role.value} process {m.process.pid}"
                proof = f"{child} is a child of {parent.comm} {parent.pid} (uid {parent.uid})"
                self.proven[key] = proof
                return proof
            if key in self.proven:
                return self.proven[key] + ", seen by an earlier scan"
        return None

    def held(self, members: Sequence[ProbeMember]) -> Optional[str]:
        """Why a member is held rather than hung: stopped (SIGSTOP, by its own uid) or traced (a debugger)."""
        for m in members[:MEMBERS_CHECKED]:
            p = m.process
            if p.is_zombie:
                continue
            if p.state in ("T", "t"):
                how = "stopped" if p.state == "T" else "stopped by its tracer"
                return f"{m.role.value} process {p.pid} is {how} (state {p.state})"
            tracer = self.proc.tracer(p.pid)
            if tracer:
                return f"{m.role.value} process {p.pid} is traced by pid {tracer}"
        return None
