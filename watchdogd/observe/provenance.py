"""Whether a probe is libvirt's, as the kernel tells it, and whether it is held (stopped or traced) rather than hung.

The qemu user owns every probe dir and can run processes of any name and argv: only what it
cannot fake counts. Where systemd runs, a member in libvirt's own unit cgroup; elsewhere, a
member that is (or was seen by an earlier scan as) a libvirt daemon's child, remembered per
process (pid and start time), never per dir.
"""

from __future__ import annotations

from typing import AbstractSet, Dict, List, Optional, Sequence, Tuple

from ..config import Config
from ..emulators import is_libvirt_unit
from ..model import ProbeMember, Process
from .procfs import ProcFS

MEMBERS_CHECKED = 8  # members of a probe whose cgroup, stop and trace state is read (a probe has three)
LIBVIRT_MEMBERS = 3  # all a probe of libvirt's ever has: its first process, the intermediate (a zombie), the daemon


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

    def judge(
        self, members: Sequence[ProbeMember], trusted: AbstractSet[int], table: Dict[int, Process]
    ) -> Tuple[Optional[str], Optional[str]]:
        """(proof, held): how the kernel says the probe is libvirt's (None: not proven), and why it is held rather
        than hung (None: not held). Both are judged on libvirt's own members: a process the qemu uid adds to a
        genuine probe (stopped, say) neither holds it nor proves anything; and a probe with more members than
        libvirt makes is not proven at all, whatever one of them shows."""
        own = self._libvirts_own(members, trusted, table)
        proof = own[0][1] if own and len(members) <= LIBVIRT_MEMBERS else None
        return proof, self.held([m for m, _ in own] or members)

    def _libvirts_own(
        self, members: Sequence[ProbeMember], trusted: AbstractSet[int], table: Dict[int, Process]
    ) -> List[Tuple[ProbeMember, str]]:
        """The members the kernel says are libvirt's, each with how.

        Where systemd runs (and not for a session libvirt, whose user runs its own units), a member in
        system.slice/libvirtd.service (or virtqemud.service): libvirt's units use KillMode=process, so
        its probes stay in its cgroup across a restart, and no unprivileged uid can move a process there.
        Elsewhere, a member that is (or was seen by an earlier scan as) a libvirt daemon's child."""
        own: List[Tuple[ProbeMember, str]] = []
        if self.proc.systemd and not self.config.libvirt.session_dirs:
            daemons = self.config.detect.libvirt_daemons
            for m in members[:MEMBERS_CHECKED]:
                if m.process.is_zombie:
                    continue
                cgroup = self.proc.cgroup(m.process.pid) or ()
                if len(cgroup) >= 2 and cgroup[0] == "system.slice" and is_libvirt_unit(cgroup[:2], daemons):
                    own.append((m, f"{m.role.value} process {m.process.pid} runs in {cgroup[1]}'s cgroup"))
            return own
        for m in members[:MEMBERS_CHECKED]:
            key = (m.process.pid, m.process.start_boot_s)
            if m.process.ppid in trusted:
                parent = table[m.process.ppid]
                child = f"{m.role.value} process {m.process.pid}"
                self.proven[key] = f"{child} is a child of {parent.comm} {parent.pid} (uid {parent.uid})"
                own.append((m, self.proven[key]))
            elif key in self.proven:
                own.append((m, self.proven[key] + ", seen by an earlier scan"))
        return own

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
