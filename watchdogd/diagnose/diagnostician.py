"""What diagnosis adds to a scan: why each hung probe hung, what the domains' logs said, whether KVM works.

The Diagnostician runs between observe and assess, on every scan:
- a probe that turns hung is captured (observe.capture) before anything acts on it,
  classified, and its bundle kept under state_dir/incidents/ (once per probe);
- each probe's outcome goes into the kernel history (worked or hung, per release);
- what the domain-log monitor read is matched against the signature table
  (diagnose.vm_starts: a match opens a VM start failure, resolved when that domain
  next starts cleanly, or after detect.stale_dir_after);
- the KVM self-test runs once, at the first scan where /dev/kvm exists (a new kernel
  is a boot, so that is also when kernel_changed opens).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

from ..budget import Budget
from ..config import Config, KvmSelftest
from ..model import Observation, Probe
from ..observe import kernel_journal
from ..observe.capture import Capturer
from ..observe.domain_logs import DomainLines
from ..observe.kernel_journal import BlockedTasks, KernelLine
from ..observe.libvirt_journal import ProbeFailure
from ..problems import Problem
from ..state import StateStore
from ..thresholds import is_hung, vm_failure_kept_for
from . import incidents
from .classify import Diagnosis, classify
from .history import KernelHistory
from .kvmtest import KvmResult, device_present, run_selftest
from .packages import LOOKUPS_PER_SCAN, EmulatorPackages
from .signatures import KVM_REFUSED, Signature, explain, load_or_shipped, match
from .vm_starts import VmFailure, VmStarts

CAPTURES_PER_SCAN = 4  # hung probes captured in full per scan, proven ones first (a flood of forged ones costs 4)


Who = Tuple[float, FrozenSet[Tuple[int, float]]]  # a probe dir's birth, and its live members (pid, start time)


def same_story(before: Who, now: Who) -> bool:
    """The same probe as captured before, or what is left of it while it is being ended (a kill takes a scan or two):
    one bundle per hung probe. A new member, or a new dir under the same name, is another story.

    >>> hung = (100.0, frozenset({(7, 1.0), (8, 1.5)}))
    >>> same_story(hung, (100.0, frozenset({(7, 1.0)}))), same_story(hung, (100.0, frozenset({(7, 1.0), (9, 2.0)})))
    (True, False)
    """
    return before[0] == now[0] and now[1] <= before[1]


def trusted(probe: Probe) -> bool:
    """Proven libvirt's and held by nobody: only such a probe writes history (kernel history, incident bundles)."""
    return probe.proof is not None and probe.held is None


@dataclass(frozen=True)
class Insight:
    diagnoses: Dict[str, Diagnosis] = field(default_factory=dict)  # probe dir -> why it hung
    history: Optional[str] = None  # the kernel history sentence for this kernel, when it says something
    vm_failures: Tuple[VmFailure, ...] = ()
    kvm: Optional[KvmResult] = None
    probe_failures: Tuple[ExplainedFailure, ...] = ()


@dataclass(frozen=True)
class ExplainedFailure:
    """A probe failure libvirt logged, and why, from the signature table."""

    failure: ProbeFailure
    cause: str
    what_to_do: str


def _joined(diagnosis: Diagnosis, probe: Probe, obs: Observation, blocked: Optional[BlockedTasks]) -> Diagnosis:
    """The diagnosis, with the kernel's hung-task line of one of the probe's live members if it told one."""
    if blocked is None or diagnosis.kernel_said is not None:
        return diagnosis
    boot_wall = obs.taken_wall - obs.uptime_s
    for m in probe.live_members:
        said = blocked.said_of(m.process.pid, m.process.comm, boot_wall + m.process.start_boot_s)
        if said is not None:
            return replace(diagnosis, kernel_said=said.text)
    return diagnosis


@dataclass
class Readers:
    """What the diagnostician reads of the host itself: a hung probe's stacks, /dev/kvm's answers, the kernel's
    lines."""

    capturer: Capturer
    selftest: Callable[[], KvmResult] = run_selftest
    device: Callable[[], bool] = device_present  # is there a /dev/kvm at all?
    kernel: Callable[[], Tuple[List[KernelLine], Optional[str]]] = kernel_journal.this_boot  # this boot's lines


class Diagnostician:
    def __init__(
        self,
        config: Config,
        state: StateStore,
        readers: Readers,
        table: Tuple[Signature, ...],
        history: KernelHistory,
        clock: Callable[[], float] = time.time,
    ):
        self.config = config
        self.state = state
        self.readers = readers
        self.table = table
        self.history = history
        self.clock = clock
        # probe dir -> ((birth, members), the diagnosis)
        self._diagnosed: Dict[str, Tuple[Who, Diagnosis]] = {}
        self._live: Dict[str, bool] = {}  # probe dirs with live members seen: hung yet?
        self.vm_starts = VmStarts(config.libvirt.log_dir, table, vm_failure_kept_for(config.detect))
        self._kvm: Optional[KvmResult] = None
        self._kernel_read = False  # no /dev/kvm: the kernel's lines were read for why, once
        # (emulator, its ctime) -> package: asked of dpkg/rpm once
        self.packages = EmulatorPackages()
        # incident bundles to keep once the scan has acted
        self._unsaved: List[Tuple[str, Dict[str, object], float]] = []

    def adopt(self, old: Diagnostician) -> None:
        """After a reload: the old diagnosis's memory, and (same log dir) the VM start failures open."""
        if old.config.libvirt.log_dir == self.config.libvirt.log_dir:
            self.vm_starts.failures = old.vm_starts.failures
        self._diagnosed, self._live, self._kvm, self.packages = old._diagnosed, old._live, old._kvm, old.packages
        self._kernel_read = old._kernel_read
        self.history = old.history
        self._unsaved = old._unsaved + self._unsaved

    def insight(
        self,
        obs: Observation,
        failures: Sequence[ProbeFailure] = (),
        logged: Optional[DomainLines] = None,
        blocked: Optional[BlockedTasks] = None,
    ) -> Insight:
        """Why probes hung, why VMs and probes failed, whether KVM works: all this scan's diagnosis.

        failures: what the libvirt-journal monitor read; logged: what the domain-log monitor read since the last
        scan; blocked: the kernel's hung-task lines, joined to the probe whose member they name."""
        hung = sorted((p for p in obs.probes if is_hung(p, self.config.detect)), key=lambda p: not trusted(p))
        captures = Budget(CAPTURES_PER_SCAN)
        diagnoses = {p.path: _joined(self._diagnose(p, obs, captures), p, obs, blocked) for p in hung}
        self._outcomes(obs, {p.path for p in hung})
        self._kvm_check(obs)
        self.vm_starts.read(logged or {}, obs.taken_wall)
        explained = tuple(ExplainedFailure(f, *explain(f.qemu_said, self.table)) for f in failures)
        history = self.history.summary(obs.kernel_release)
        return Insight(diagnoses, history, self.vm_starts.current(obs.taken_wall), self._kvm, explained)

    # ---- hung probes ---------------------------------------------------------------------
    def _diagnose(self, probe: Probe, obs: Observation, captures: Budget) -> Diagnosis:
        who = (probe.made_wall, frozenset((m.process.pid, m.process.start_boot_s) for m in probe.live_members))
        seen = self._diagnosed.get(probe.path)
        if seen is not None and same_story(seen[0], who) and (probe.held is None) == (seen[1].cause != "held"):
            return seen[1]  # the same processes (or what is left of them) in the same dir: captured once
        if not captures.take():
            # past this scan's captures: a later scan may take it
            return classify(probe, self.readers.capturer.skipped(probe))
        capture = self.readers.capturer.capture(probe)  # before anything acts on it: this scan plans the kill
        diagnosis = classify(probe, capture)
        self._diagnosed[probe.path] = (who, diagnosis)
        if not trusted(probe):
            return diagnosis  # forgeable: it writes no incident bundle (a flood of them would evict the genuine ones)
        exes = sorted({p.exe for p in capture.processes if p.exe})
        bundle: Dict[str, object] = {
            "probe_dir": probe.path,
            "taken": obs.taken_wall,
            "age_s": round(probe.age_s, 1),
            "diagnosis": diagnosis.to_json(),
            "capture": capture.to_json(),
            "emulator": exes,
            "kernel": obs.kernel_release,
            "kernel_last_good": obs.kernel_last_good,
            "proof": probe.proof,
        }
        self._unsaved.append((os.path.basename(probe.path), bundle, obs.taken_wall))
        return diagnosis

    def keep_incidents(self) -> List[Problem]:
        """Write the bundles this scan captured, with the emulators' package versions.

        Called once the scan has reported and planned: asking dpkg which package owns the
        emulator takes ~150 ms, which must never stand between a hung probe and its kill.
        """
        problems: List[Problem] = []
        lookups = Budget(LOOKUPS_PER_SCAN)
        for name, bundle, taken in self._unsaved:
            if not self.state.read_only:
                exes = bundle.get("emulator")
                bundle["packages"] = (
                    {exe: self.packages.of(exe, lookups) for exe in exes} if isinstance(exes, list) else {}
                )
                problems += incidents.save(self.state, name, bundle, taken)
        self._unsaved = []
        return problems

    def _outcomes(self, obs: Observation, hung: set) -> None:  # type: ignore[type-arg]
        """Each probe once into the kernel history: hung when it turned hung, worked when it went without."""
        present = {p.path: p for p in obs.probes if p.live_members}
        for path, probe in present.items():
            if not trusted(probe):  # forged or held probes write no history (and one that turned held is no outcome)
                self._live.pop(path, None)
                continue
            was = self._live.get(path)
            now_hung = path in hung
            if was is None or (now_hung and not was):
                self._live[path] = now_hung
                if now_hung:
                    self.history.record(obs.kernel_release, hung=True, now=obs.taken_wall)
        for path in [p for p in self._live if p not in present]:
            if not self._live.pop(path):
                self.history.record(obs.kernel_release, hung=False, now=obs.taken_wall)
        self._diagnosed = {k: v for k, v in self._diagnosed.items() if k in {p.path for p in obs.probes}}

    # ---- the KVM self-test --------------------------------------------------------------
    def _kvm_check(self, obs: Observation) -> None:
        """Once, at the first scan where /dev/kvm exists. The kernel cannot change under a running
        daemon: a new kernel is a boot and so a start, which is when kernel_changed opens too.
        Where there is none, the kernel's own lines say whether it refused KVM at boot (read once)."""
        if self._kvm is not None or self.config.diagnose.kvm_selftest is KvmSelftest.OFF:
            return
        if self.readers.device():
            self._kvm = self.readers.selftest()
            return
        if self._kernel_read:
            return
        self._kernel_read = True
        lines, _ = self.readers.kernel()
        table = load_or_shipped(self.config.diagnose.signatures, "kernel")
        refused = [m for m in match([k.text for k in lines], table) if m.signature.cause in KVM_REFUSED]
        if refused:
            m = refused[-1]
            problem = f"there is no /dev/kvm: the kernel said at boot {m.line.strip()!r} ({m.signature.cause})"
            self._kvm = KvmResult(False, None, problem=problem, advice=[m.signature.what_to_do])
