"""Observe, read-only: probe dirs, their processes and zombies, the cache, the kernel.

Nothing here signals, writes or deletes. One scan is one pass over /proc and one
streamed listing per probe dir. Every probe base is opened one component at a
time without following links, every probe dir through that fd, and its pidfile
through the dir's fd, so nothing a user swapped for a symlink is ever entered.

What the qemu user can make is bounded here: at most detect.max_dirs_per_base
dirs are read per base (dirs that a live emulator names always are, so a flood
cannot hide a real probe), and what is past that is one count.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from typing import AbstractSet, Callable, Dict, List, NamedTuple, Optional, Tuple

from ..config import Config
from ..fsafe import BirthTime, open_dir_nofollow, open_path_nofollow
from ..model import DirFlood, LatencyResult, MissingDir, Observation, PidfileRead, Probe, ProbeMember, Role
from ..pidfile import read_pid_max, read_pidfile
from ..problems import Problem
from ..safety import QMP_DIR, Protected, why_not_member
from ..state import StateStore
from .cache_dir import cache_entries
from .guests import Guests
from .process_table import ProcessTable
from .procfs import ProcFS
from .provenance import Provenance
from .view import ProcessView, defunct, role_of


class Maker(NamedTuple):
    """The libvirt that makes a base's probes: its uid (root; a session libvirt's user), and its daemons' pids."""

    uid: int
    parents: AbstractSet[int]


class Scanner:
    def __init__(
        self,
        config: Config,
        proc: ProcFS,
        birth: BirthTime,
        state: StateStore,
        clock: Callable[[], float] = time.time,
        own_pid: Optional[int] = None,
    ):
        """One scanner serves the loop and the action lanes (threads): what it remembers
        (first sight of a dir, proof of parentage, libvirt's pids) is one memory, behind a lock.

        clock is the wall clock (a test moves it to show the clock-jump guard); ages
        between scans are on the monotonic one."""
        self.config = config
        self.proc = proc
        self.birth = birth
        self.state = state
        self.clock = clock
        self.mono: Callable[[], float] = time.monotonic
        self.processes = ProcessTable(config, proc)
        self._first_seen: Dict[str, Tuple[float, float]] = {}  # probe dir -> (monotonic time, its age then)
        self.provenance = Provenance(config, proc)  # proofs per process, never per dir
        self._missing_since: Dict[str, float] = {}  # probe base -> monotonic time it was first seen missing
        self.own_pid = os.getpid() if own_pid is None else own_pid
        self.guests = Guests(proc, config.detect.emulator_names, self.own_pid)
        self._pid_max: Optional[int] = None  # read from proc's root when first needed
        self._lock = threading.Lock()

    def adopt(self, old: Scanner) -> None:
        """After a reload: the old scanner's memory (first sight of each dir, proofs, libvirt's pids, guests)."""
        with old._lock:
            self._first_seen = dict(old._first_seen)
            self.provenance.proven = dict(old.provenance.proven)
            self.processes.adopt(old.processes)
            self.guests.known = dict(old.guests.known)
            self._missing_since = {k: v for k, v in old._missing_since.items() if k in self.config.libvirt.probe_dirs}

    @property
    def full_walks(self) -> int:
        return self.processes.full_walks

    @property
    def pid_max(self) -> int:
        if self._pid_max is None:
            self._pid_max = read_pid_max(self.proc.root)
        return self._pid_max

    def observe(self, latency: Optional[LatencyResult] = None, full: Optional[bool] = None) -> Observation:
        """One pass. full=True walks all of /proc; None lets the scanner choose (process_table)."""
        with self._lock:
            return self._observe(latency, full, with_state=True)

    def recheck(self) -> Observation:
        """A fresh full look for an action about to act: the same rules and memory, no state read, nothing drained."""
        with self._lock:
            return self._observe(None, True, with_state=False)

    def _observe(self, latency: Optional[LatencyResult], full: Optional[bool], with_state: bool) -> Observation:
        errors: List[str] = []
        now = self.clock()
        uptime = self.proc.uptime()
        read = self.processes.read(full)
        table = read.processes
        libvirt_pids = frozenset(self.processes.libvirt)
        protected = Protected(self.own_pid, libvirt_pids)
        view = ProcessView(table, protected, now, uptime, self.config.libvirt.probe_dirs, read.placed)
        probes: List[Probe] = []
        floods: List[DirFlood] = []
        as_libvirt = bool(self.config.libvirt.probe_dirs)
        for base in self.config.libvirt.probe_dirs:
            found, flood, base_as_libvirt = self._probes_in(base, view, errors)
            probes.extend(found)
            as_libvirt = as_libvirt and base_as_libvirt
            if flood is not None:
                floods.append(flood)
        self.guests.update(table, read.walked, probes, libvirt_pids)
        present = {p.path for p in probes}
        self._first_seen = {k: v for k, v in self._first_seen.items() if k in present}
        alive = {(m.process.pid, m.process.start_boot_s) for p in probes for m in p.members}
        self.provenance.keep_only(alive)
        entries, cache_owner = cache_entries(self.config.libvirt.cache_dir, errors)
        kernel_last_good = None
        if with_state:
            kernel_last_good = self.state.last_good_kernel()  # a corrupt file is told by the state's collector
        return Observation(
            taken_wall=now,
            uptime_s=uptime,
            probes=tuple(sorted(probes, key=lambda p: p.path)),
            defunct=tuple(defunct(view, probes, self.config.detect.emulator_names, self.proc)),
            libvirt_pids=tuple(sorted(libvirt_pids)),
            cache_dir=self.config.libvirt.cache_dir,
            cache_entries=entries,
            kernel_release=os.uname().release,
            kernel_last_good=kernel_last_good,
            latency=latency,
            floods=tuple(floods),
            missing_dirs=self._missing(),
            cache_owner_uid=cache_owner,
            probes_as_libvirt=as_libvirt,
            guests=tuple(sorted(self.guests.known)),
            errors=tuple(Problem(e) for e in errors),
        )

    def _missing(self) -> Tuple[MissingDir, ...]:
        mono = self.mono()
        return tuple(MissingDir(path, mono - since) for path, since in sorted(self._missing_since.items()))

    def _open_or_note(self, base: str, errors: List[str]) -> Optional[int]:
        """The base's fd; None (with the reason noted) when it is missing or refused."""
        try:
            fd = open_path_nofollow(base)
        except FileNotFoundError:
            self._missing_since.setdefault(base, self.mono())
            return None
        except OSError as exc:
            self._missing_since.pop(base, None)
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                errors.append(
                    f"probe dir {base} refused: a part of its path is a symbolic link or not a directory; nothing "
                    "under it is read or touched"
                )
            else:
                errors.append(f"cannot read probe dir {base}: {exc.strerror}")
            return None
        self._missing_since.pop(base, None)
        return fd

    def _probes_in(
        self, base: str, view: ProcessView, errors: List[str]
    ) -> Tuple[List[Probe], Optional[DirFlood], bool]:
        """The base's probes, its flood if any, and whether libvirt runs its probes as itself (the base is its)."""
        base_fd = self._open_or_note(base, errors)
        if base_fd is None:
            return [], None, False
        probes: List[Probe] = []
        cap = self.config.detect.max_dirs_per_base
        named = view.named_dirs(base, cap)
        total = read = others = 0
        base_owner, maker = -1, Maker(0, frozenset())  # an unreadable base: nothing said of libvirt
        try:
            base_owner = os.fstat(base_fd).st_uid
            uid = base_owner if self.config.libvirt.session_dirs else 0
            maker = Maker(uid, view.trusted_parents(uid))
            with os.scandir(base_fd) as entries:
                for entry in entries:
                    name = entry.name
                    if not QMP_DIR.fullmatch(name):
                        continue
                    total += 1
                    if name not in named:
                        if others >= cap:
                            continue  # counted, not read: a flood costs a listing, not a scan of each dir
                        others += 1
                    read += 1
                    probe = self._read_probe(base_fd, base, name, view, maker, errors)
                    if probe is not None:
                        probes.append(probe)
        except OSError as exc:
            errors.append(f"cannot list probe dir {base}: {exc.strerror}")
        finally:
            os.close(base_fd)
        return probes, (DirFlood(base, total, read) if total > read else None), base_owner == maker.uid

    def _read_probe(
        self, base_fd: int, base: str, name: str, view: ProcessView, maker: Maker, errors: List[str]
    ) -> Optional[Probe]:
        try:
            dir_fd = open_dir_nofollow(name, dir_fd=base_fd)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                errors.append(f"cannot open {os.path.join(base, name)}: {exc.strerror}")
            return None  # vanished, or not a real dir: never a probe
        try:
            made = self.birth.of_fd(dir_fd)
            owner = os.fstat(dir_fd).st_uid
            pidfile = read_pidfile(dir_fd, self.pid_max)
        finally:
            os.close(dir_fd)
        return self._probe(os.path.join(base, name), made, owner, pidfile, view, maker)

    def _probe(
        self, path: str, made: float, owner: int, pidfile: PidfileRead, view: ProcessView, maker: Maker
    ) -> Probe:
        names = self.config.detect.emulator_names
        table, protected, boot_wall = view.table, view.protected, view.now - view.uptime
        live = [
            p
            for p in view.naming.get(path, ())
            if why_not_member(p, path, made, boot_wall, protected, names, owner) is None
        ]
        live_pids = {p.pid for p in live}
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
            age = self._dir_age(path, max(0.0, view.now - made))
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
        )

    def _dir_age(self, path: str, wall_age: float) -> float:
        """A dir's age from its birth time, but never more than the monotonic clock allows since first seen.

        Birth times are wall time: a clock set forward an hour would make every
        fresh probe dir look an hour old (and stale, and removable). Once a dir has
        been seen, its age grows with the monotonic clock only.
        """
        mono = self.mono()
        first = self._first_seen.setdefault(path, (mono, wall_age))
        return min(wall_age, first[1] + (mono - first[0]))
