"""Observe, read-only: one scan of probe dirs, their processes and zombies, guests, the cache, the kernel.

Nothing here signals, writes or deletes. The Scanner orchestrates: the processes to look at
(process_table: a walk of /proc or libvirt's own), the probe dirs of each base (probe_dirs:
never through a link, a flood capped), each dir's members (membership, with provenance's
proof) and libvirt's guests; what it remembers between scans is one memory, behind a lock.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable, List, Optional, Tuple

from ..config import Config
from ..fsafe import BirthTime
from ..model import DirFlood, LatencyResult, Observation, Probe
from ..pidfile import read_pid_max
from ..problems import Problem
from ..safety import Protected
from ..state import StateStore
from .cache_dir import cache_entries
from .guests import Guests
from .membership import Maker, Membership
from .probe_dirs import ProbeDirs
from .process_table import ProcessTable
from .procfs import ProcFS
from .provenance import Provenance
from .view import ProcessView, defunct


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
        self.dirs = ProbeDirs(config, birth, lambda: self.pid_max, lambda: self.mono())  # noqa: PLW0108  # a test's clock
        self.provenance = Provenance(config, proc)  # proofs per process, never per dir
        self.membership = Membership(config, proc, self.provenance)
        self.own_pid = os.getpid() if own_pid is None else own_pid
        self.guests = Guests(proc, config.detect.emulator_names, self.own_pid)
        self._pid_max: Optional[int] = None  # read from proc's root when first needed
        self._lock = threading.Lock()

    def adopt(self, old: Scanner) -> None:
        """After a reload: the old scanner's memory (first sight of each dir, proofs, libvirt's pids, guests)."""
        with old._lock:
            self.dirs.adopt(old.dirs)
            self.provenance.proven = dict(old.provenance.proven)
            self.processes.adopt(old.processes)
            self.guests.known = dict(old.guests.known)

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
        self.dirs.keep_only({p.path for p in probes})
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
            missing_dirs=self.dirs.missing(),
            cache_owner_uid=cache_owner,
            probes_as_libvirt=as_libvirt,
            guests=tuple(sorted(self.guests.known)),
            errors=tuple(Problem(e) for e in errors),
        )

    def _probes_in(
        self, base: str, view: ProcessView, errors: List[str]
    ) -> Tuple[List[Probe], Optional[DirFlood], bool]:
        """The base's probes, its flood if any, and whether libvirt runs its probes as itself (the base is its)."""
        read = self.dirs.read_base(base, view.named_dirs(base, self.config.detect.max_dirs_per_base), errors)
        if read.owner is None:
            return [], read.flood, False  # an unreadable base: nothing said of libvirt
        uid = read.owner if self.config.libvirt.session_dirs else 0
        maker = Maker(uid, view.trusted_parents(uid))
        probes = [self.membership.probe(d, view, maker, self.dirs.age) for d in read.dirs]
        return probes, read.flood, read.owner == maker.uid
