"""Observe, read-only: probe dirs, their processes and zombies, the cache, the kernel.

Nothing here signals, writes or deletes. One scan is one pass over /proc and one
listdir per probe dir; every probe dir is opened without following links and its
pidfile read through that fd, so a dir swapped for a symlink is never entered.
"""

from __future__ import annotations

import errno
import os
import re
import time
from typing import AbstractSet, Callable, Dict, List, Optional, Sequence, Set, Tuple

from .config import Config
from .fsafe import BirthTime, open_dir_nofollow, read_pid_max, read_pidfile
from .model import Defunct, LatencyResult, Observation, PidfileRead, Probe, ProbeMember, Process, Role
from .procfs import ProcFS
from .safety import Protected, is_emulator_name, names_dir, why_not_member
from .state import StateStore

QMP_DIR = re.compile(r"qmp-[A-Za-z0-9]{6}")

# With no probe dir anywhere, a scan reads only libvirt's own process subtree; the
# whole of /proc is walked at least this often even then (a safety net: nothing an idle host
# can show needs it) (and always when a probe
# dir exists, a known libvirt daemon is gone, or an action is about to act).
FULL_WALK_EVERY = 600.0


class Scanner:
    def __init__(
        self,
        config: Config,
        proc: ProcFS,
        birth: BirthTime,
        state: StateStore,
        clock: Callable[[], float] = time.time,
        own_pid: Optional[int] = None,
        mono: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self.proc = proc
        self.birth = birth
        self.state = state
        self.clock = clock
        self.mono = mono
        self.full_walks = 0
        self._last_walk: Optional[float] = None
        self._libvirt: Dict[int, float] = {}  # libvirt daemons seen by the last walk: pid -> start time
        self._first_seen: Dict[str, Tuple[float, float]] = {}  # probe dir -> (monotonic time, its age then)
        self.own_pid = os.getpid() if own_pid is None else own_pid
        self.pid_max = read_pid_max(proc.root)
        names = config.detect.emulator_names
        daemons = set(config.detect.libvirt_daemons)
        self._interesting = lambda comm: comm in daemons or is_emulator_name(comm, names)

    def observe(self, latency: Optional[LatencyResult] = None, full: Optional[bool] = None) -> Observation:
        """One pass. full=True walks all of /proc; None lets the scanner choose (see FULL_WALK_EVERY)."""
        errors: List[str] = []
        now = self.clock()
        uptime = self.proc.uptime()
        boot_wall = now - uptime
        table = self._table(full)
        libvirt_pids = frozenset(self._libvirt)
        protected = Protected(self.own_pid, libvirt_pids)
        probes: List[Probe] = []
        for base in self.config.libvirt.probe_dirs:
            probes.extend(self._probes_in(base, table, protected, now, uptime, boot_wall, errors))
        present = {p.path for p in probes}
        self._first_seen = {k: v for k, v in self._first_seen.items() if k in present}
        cache_entries = self._cache_entries(errors)
        kernel_last_good = self.state.last_good_kernel()
        errors.extend(self.state.problems)
        self.state.problems.clear()
        return Observation(
            taken_wall=now,
            uptime_s=uptime,
            probes=tuple(probes),
            defunct=tuple(self._defunct(table, probes, libvirt_pids, uptime)),
            libvirt_pids=tuple(sorted(libvirt_pids)),
            cache_dir=self.config.libvirt.cache_dir,
            cache_entries=cache_entries,
            kernel_release=os.uname().release,
            kernel_last_good=kernel_last_good,
            latency=latency,
            errors=tuple(errors),
        )

    def _table(self, full: Optional[bool]) -> Dict[int, Process]:
        """The interesting processes: a walk of all /proc, or only libvirt's subtree when nothing needs more."""
        now = self.mono()
        if full is None:
            full = self._last_walk is None or not self._libvirt or now - self._last_walk >= FULL_WALK_EVERY or self._any_probe_dir()
        table: Dict[int, Process] = {}
        if not full:
            table = self.proc.descendants(tuple(self._libvirt), self._interesting)
            full = any((p := table.get(pid)) is None or p.is_zombie or p.start_boot_s != start for pid, start in self._libvirt.items())
        if full:
            table = self.proc.scan(self._interesting)
            self._last_walk = now
            self.full_walks += 1
        daemons = set(self.config.detect.libvirt_daemons)
        self._libvirt = {p.pid: p.start_boot_s for p in table.values() if p.comm in daemons and not p.is_zombie}
        return table

    def _any_probe_dir(self) -> bool:
        for base in self.config.libvirt.probe_dirs:
            try:
                if any(QMP_DIR.fullmatch(name) for name in os.listdir(base)):
                    return True
            except OSError:
                continue
        return False

    def _probes_in(
        self,
        base: str,
        table: Dict[int, Process],
        protected: Protected,
        now: float,
        uptime: float,
        boot_wall: float,
        errors: List[str],
    ) -> List[Probe]:
        try:
            base_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return []  # libvirt has not made it yet: no probes, nothing wrong
        except OSError as exc:
            errors.append(f"cannot read probe dir {base}: {exc.strerror}")
            return []
        probes: List[Probe] = []
        try:
            names = os.listdir(base_fd)
            for name in sorted(names):
                if not QMP_DIR.fullmatch(name):
                    continue
                try:
                    dir_fd = open_dir_nofollow(name, dir_fd=base_fd)
                except OSError as exc:
                    if exc.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                        errors.append(f"cannot open {os.path.join(base, name)}: {exc.strerror}")
                    continue  # vanished, or not a real dir: never a probe
                try:
                    made = self.birth.of_fd(dir_fd)
                    pidfile = read_pidfile(dir_fd, self.pid_max)
                finally:
                    os.close(dir_fd)
                path = os.path.join(base, name)
                probes.append(self._probe(path, made, pidfile, table, protected, now, uptime, boot_wall))
        finally:
            os.close(base_fd)
        return probes

    def _probe(
        self,
        path: str,
        made: float,
        pidfile: PidfileRead,
        table: Dict[int, Process],
        protected: Protected,
        now: float,
        uptime: float,
        boot_wall: float,
    ) -> Probe:
        names = self.config.detect.emulator_names
        live = [
            p for p in table.values() if not p.is_zombie and names_dir(p.cmdline, path) and why_not_member(p, path, made, boot_wall, protected, names) is None
        ]
        live_pids = {p.pid for p in live}
        rejected: Optional[str] = None
        if pidfile.pid is not None and pidfile.pid not in live_pids:
            named = table.get(pidfile.pid) or self.proc.process(pidfile.pid)
            if named is None:
                rejected = f"pidfile names pid {pidfile.pid}, which is not running"
            else:
                why = why_not_member(named, path, made, boot_wall, protected, names)
                rejected = f"pidfile names pid {named.pid} ({named.comm}), which is not part of this probe: {why}"
        members = [ProbeMember(p, _role(p, pidfile.pid, live_pids, protected.libvirt_pids)) for p in live]
        daemons = [m for m in members if m.role == Role.DAEMON]
        if len(daemons) > 1:  # only the pidfile can settle which one is the daemon
            members = [ProbeMember(m.process, Role.UNKNOWN) if m.role == Role.DAEMON and m.process.pid != pidfile.pid else m for m in members]
        firsts = {m.process.pid for m in members if m.role == Role.FIRST}
        members.extend(ProbeMember(z, Role.INTERMEDIATE) for z in table.values() if z.is_zombie and z.ppid in firsts)
        members.sort(key=lambda m: m.process.pid)
        if live:
            age = max(0.0, uptime - min(p.start_boot_s for p in live))
        else:
            age = self._dir_age(path, max(0.0, now - made))
        return Probe(path=path, made_wall=made, age_s=age, pidfile=pidfile, members=tuple(members), pidfile_rejected=rejected)

    def _dir_age(self, path: str, wall_age: float) -> float:
        """A dir's age from its birth time, but never more than the monotonic clock allows since first seen.

        Birth times are wall time: a clock set forward an hour would make every
        fresh probe dir look an hour old (and stale, and removable). Once a dir has
        been seen, its age grows with the monotonic clock only.
        """
        mono = self.mono()
        first = self._first_seen.setdefault(path, (mono, wall_age))
        return min(wall_age, first[1] + (mono - first[0]))

    def _defunct(self, table: Dict[int, Process], probes: Sequence[Probe], libvirt_pids: AbstractSet[int], uptime: float) -> List[Defunct]:
        owner: Dict[int, str] = {}
        for probe in probes:
            for member in probe.members:
                owner[member.process.pid] = probe.path
        found: List[Defunct] = []
        names = self.config.detect.emulator_names
        for zombie in table.values():
            if not zombie.is_zombie or not is_emulator_name(zombie.comm, names):
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
                parent = self.proc.process(zombie.ppid)
            found.append(Defunct(zombie=zombie, parent=parent, parent_kind=kind, probe_path=probe_path, age_s=max(0.0, uptime - zombie.start_boot_s)))
        return found

    def _cache_entries(self, errors: List[str]) -> Optional[Tuple[str, ...]]:
        path = self.config.libvirt.cache_dir
        try:
            return tuple(sorted(n for n in os.listdir(path) if n.endswith(".xml")))
        except FileNotFoundError:
            return ()
        except OSError as exc:
            errors.append(f"cannot read cache dir {path}: {exc.strerror}")
            return None


def _role(proc: Process, pidfile_pid: Optional[int], members: Set[int], libvirt_pids: AbstractSet[int]) -> Role:
    if proc.pid == pidfile_pid:
        return Role.DAEMON
    if proc.ppid in libvirt_pids:
        return Role.FIRST
    if proc.ppid in members:
        return Role.UNKNOWN
    return Role.DAEMON  # re-parented to init or a subreaper: what the daemon looks like
