"""A probe dir's members: the processes that name it and pass the membership rule, their roles in qemu's
-daemonize double fork, what its pidfile says of them, and whether libvirt made them (provenance)."""

from __future__ import annotations

import itertools
from typing import AbstractSet, Callable, NamedTuple, Optional

from ..config import Config
from ..model import Probe, ProbeMember, Role
from ..safety import may_be_member, started_since, why_not_member
from .probe_dirs import DirRead
from .procfs import ProcFS
from .provenance import Provenance
from .view import ProcessView, role_of

UNREAD_NAMED = 4  # the unread processes a dir names as maybe its own


class Maker(NamedTuple):
    """The libvirt that makes a base's probes: its uid (root; a session libvirt's user), and its daemons' pids."""

    uid: int
    parents: AbstractSet[int]


class Membership:
    def __init__(self, config: Config, proc: ProcFS, provenance: Provenance):
        self.config = config
        self.proc = proc
        self.provenance = provenance

    def probe(self, read: DirRead, view: ProcessView, maker: Maker, dir_age: Callable[[str, float], float]) -> Probe:
        """dir_age: a dir's age from its wall age, when no live process dates it (ProbeDirs.age)."""
        path, made, owner, pidfile = read
        names = self.config.detect.emulator_names
        table, protected, boot_wall = view.table, view.protected, view.now - view.uptime
        live = [
            p
            for p in view.naming.get(path, ())
            if why_not_member(p, path, made, boot_wall, protected, names, owner) is None
        ]
        live_pids = {p.pid for p in live}
        # of the dir's uid's unread processes, those started since the dir was made, the newest first: a few are
        # named (one keeps the dir), however many there are
        since = itertools.takewhile(lambda p: started_since(p, made, boot_wall), view.unread.get(owner, ()))
        maybe = (p.pid for p in since if may_be_member(p, made, boot_wall, protected, names, owner))
        unread = tuple(itertools.islice(maybe, UNREAD_NAMED))
        rejected: Optional[str] = None
        if pidfile.pid is not None and pidfile.pid not in live_pids:
            named = table.get(pidfile.pid) or self.proc.process(pidfile.pid)
            if named is None:
                rejected = f"pidfile names pid {pidfile.pid}, which is not running"
            else:
                outside = view.why_outside(named.pid)
                why = outside or why_not_member(named, path, made, boot_wall, protected, names, owner)
                rejected = f"pidfile names pid {named.pid} ({named.comm}), which is not part of this probe: {why}"
        members = [ProbeMember(p, role_of(p, pidfile.pid, live_pids, protected.libvirt_pids)) for p in live]
        daemons = [m for m in members if m.role == Role.DAEMON]
        if len(daemons) > 1:  # only the pidfile can settle which one is the daemon
            members = [
                ProbeMember(m.process, Role.UNKNOWN) if m.role == Role.DAEMON and m.process.pid != pidfile.pid else m
                for m in members
            ]
        firsts = {m.process.pid for m in members if m.role == Role.FIRST}
        members.extend(ProbeMember(z, Role.INTERMEDIATE) for z in table.values() if z.is_zombie and z.ppid in firsts)
        members.sort(key=lambda m: m.process.pid)
        if live:
            age = max(0.0, view.uptime - min(p.start_boot_s for p in live))
        else:
            age = dir_age(path, max(0.0, view.now - made))
        proof, held = self.provenance.judge(members, maker.parents, table)
        return Probe(
            path=path,
            made_wall=made,
            age_s=age,
            pidfile=pidfile,
            members=tuple(members),
            pidfile_rejected=rejected,
            owner_uid=owner,
            proof=proof,
            as_libvirt=owner == maker.uid,
            held=held,
            unread_pids=unread,
        )
