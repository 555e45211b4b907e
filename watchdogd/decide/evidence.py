"""The evidence of each finding family, typed: what assess builds, what the journal's KVMWD_EVIDENCE shows.

Each family is a frozen dataclass whose fields are its JSON keys (a None optional is left
out); the questions later stages ask of any finding (which probe dir, which pids, how old,
how slow, why) are answered by methods of model.Evidence, never by reading a key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

from ..causes import Cause
from ..diagnose.classify import Diagnosis
from ..diagnose.kvmtest import KvmResult
from ..model import AS_DIAGNOSIS, OMIT_IF_NONE, Evidence, Grounds, PidfileRead


@dataclass(frozen=True)
class ProcessFact:
    """A probe member as the finding shows it."""

    pid: int
    role: str
    state: str
    ppid: int
    comm: str
    uid: Optional[int]
    age_s: float


@dataclass(frozen=True)
class HungProbe(Evidence):
    """probe_hung: the probe, its processes, why it hung, and whose it is."""

    probe_dir: str
    age_s: float
    pids: Tuple[int, ...]
    processes: Tuple[ProcessFact, ...]
    pidfile: PidfileRead
    found: Diagnosis = field(metadata=AS_DIAGNOSIS)
    owner_uid: Optional[int]
    proof: Optional[str] = field(default=None, metadata=OMIT_IF_NONE)  # how the kernel says it is libvirt's
    # stopped or traced: never host-wide, never counted toward times
    held: Optional[str] = field(default=None, metadata=OMIT_IF_NONE)
    kernel_history: Optional[str] = field(default=None, metadata=OMIT_IF_NONE)
    pidfile_rejected: Optional[str] = field(default=None, metadata=OMIT_IF_NONE)
    uninterruptible: Optional[Tuple[int, ...]] = field(default=None, metadata=OMIT_IF_NONE)  # members in D state

    def probe_path(self) -> Optional[str]:
        return self.probe_dir

    def pid_list(self) -> Tuple[int, ...]:
        return self.pids

    def age(self) -> Optional[float]:
        return self.age_s

    def diagnosis(self) -> Optional[Dict[str, object]]:
        return self.found.to_json()


@dataclass(frozen=True)
class StaleDir(Evidence):
    """probe_dir_stale: a dir no process belongs to (never proof: anyone who can write the base can make one)."""

    probe_dir: str
    age_s: float
    made: str  # ISO 8601 UTC
    pidfile: PidfileRead
    owner_uid: Optional[int]
    pidfile_rejected: Optional[str] = field(default=None, metadata=OMIT_IF_NONE)

    def probe_path(self) -> Optional[str]:
        return self.probe_dir

    def age(self) -> Optional[float]:
        return self.age_s


@dataclass(frozen=True)
class ZombieFact:
    pid: int
    parent_pid: int
    parent_comm: Optional[str]
    parent_kind: str
    age_s: float


@dataclass(frozen=True)
class Zombies(Evidence):
    """probe_defunct: zombies held by a probe's first process (probe_dir) or by libvirt itself (probe_dir None)."""

    probe_dir: Optional[str]
    pids: Tuple[int, ...]
    zombies: Tuple[ZombieFact, ...]

    def probe_path(self) -> Optional[str]:
        return self.probe_dir

    def pid_list(self) -> Tuple[int, ...]:
        return self.pids


@dataclass(frozen=True)
class Flood(Evidence):
    """probe_dirs_flood: more qmp dirs in a base than are tracked."""

    base: str
    total: int
    tracked: int


@dataclass(frozen=True)
class MissingDir(Evidence):
    """probe_dir_missing: a probe base that has not existed for a while."""

    probe_dir: str
    missing_s: float


@dataclass(frozen=True)
class Explained:
    """What a signature table row says of a line: its cause (the table's word) and what to do."""

    cause: str
    what_to_do: str


@dataclass(frozen=True)
class VmStart(Evidence):
    """vm_start_failed: the domain's QEMU log lines that matched a signature (QEMU's stderr: forgeable)."""

    domain: str
    log: str
    lines: Tuple[str, ...]
    found: Explained = field(metadata=AS_DIAGNOSIS)

    def diagnosis(self) -> Optional[Dict[str, object]]:
        return {"cause": self.found.cause, "what_to_do": self.found.what_to_do}


@dataclass(frozen=True)
class FailedProbe(Evidence):
    """probe_failed: libvirt's own journal entry (trusted fields checked), QEMU's words in it, and why."""

    binary: str
    libvirt_said: str
    qemu_said: str
    logged: str  # ISO 8601 UTC
    libvirt_pid: int
    found: Explained = field(metadata=AS_DIAGNOSIS)

    def diagnosis(self) -> Optional[Dict[str, object]]:
        return {"cause": self.found.cause, "what_to_do": self.found.what_to_do}


@dataclass(frozen=True)
class KvmUnusable(Evidence):
    """kvm_unusable: the self-test's answers."""

    kvm: KvmResult

    def to_json(self) -> Dict[str, object]:
        return {"kvm": self.kvm.to_json(), "diagnosis": self.diagnosis()}

    def diagnosis(self) -> Optional[Dict[str, object]]:
        return {"cause": Cause.KVM_UNUSABLE, "what_to_do": self.kvm.problem}


@dataclass(frozen=True)
class Latency(Evidence):
    """domcaps_slow, domcaps_hung, domcaps_failed, libvirt_unreachable: the call and what it gave."""

    uri: str
    latency_ms: Optional[float] = field(default=None, metadata=OMIT_IF_NONE)
    slow_ms: Optional[float] = field(default=None, metadata=OMIT_IF_NONE)
    timeout_s: Optional[float] = field(default=None, metadata=OMIT_IF_NONE)
    error: Optional[str] = field(default=None, metadata=OMIT_IF_NONE)

    def latency(self) -> Optional[float]:
        return self.latency_ms


@dataclass(frozen=True)
class EmptyCache(Evidence):
    """cache_empty: proof only when root owns the cache dir."""

    cache_dir: str
    entries: int
    owner_uid: Optional[int]


@dataclass(frozen=True)
class KernelChanged(Evidence):
    release: str
    last_good: str


@dataclass(frozen=True)
class Recorded(Evidence):
    """A finding's evidence as an earlier daemon saved it (status.json): shown and resolved, never acted on anew."""

    data: Mapping[str, object]

    @staticmethod
    def grounds_in(data: Mapping[str, object]) -> Grounds:
        """What it rested on as saved (a file of before grounds: from proven_libvirt, but never host-wide)."""
        try:
            return Grounds(data.get("grounds"))
        except ValueError:
            return Grounds.LIBVIRTS if data.get("proven_libvirt") is True else Grounds.FORGEABLE

    def to_json(self) -> Dict[str, object]:
        return {k: v for k, v in self.data.items() if k not in ("proven_libvirt", "grounds")}

    def probe_path(self) -> Optional[str]:
        value = self.data.get("probe_dir")
        return value if isinstance(value, str) else None

    def pid_list(self) -> Tuple[int, ...]:
        value = self.data.get("pids")
        return tuple(p for p in value if isinstance(p, int)) if isinstance(value, list) else ()

    def age(self) -> Optional[float]:
        value = self.data.get("age_s")
        return float(value) if isinstance(value, (int, float)) else None

    def latency(self) -> Optional[float]:
        value = self.data.get("latency_ms")
        return float(value) if isinstance(value, (int, float)) else None

    def diagnosis(self) -> Optional[Dict[str, object]]:
        value = self.data.get("diagnosis")
        return dict(value) if isinstance(value, dict) else None
