"""The data that flows through the watchdog: what was observed, and what it means.

Everything here is a frozen dataclass: scan produces an Observation, assess turns it
into Findings, policy turns those into planned actions. Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from .kinds import KINDS, LIBVIRT_LEVEL_KINDS, Kind, Severity
from .problems import Problem
from .timefmt import iso_utc
from .words import Word


class ActionName(Word):
    """What a policy may `do`: the config's words, the action events' and the metrics' label."""

    KILL_PROBE = "kill_probe"
    REMOVE_STALE_DIR = "remove_stale_dir"
    QUARANTINE_CACHE = "quarantine_cache"
    RESTART_LIBVIRT = "restart_libvirt"
    ALERT = "alert"


@dataclass(frozen=True)
class ActionSpec:
    """What an action may act on: the one registry the config, the policy and the act stage read."""

    applies_to: Optional[Tuple[Kind, ...]]  # the finding kinds it acts on; None: any
    host_wide: bool = False  # reaches beyond one probe's processes: acts only on proven findings

    def acts_on(self, kind: Kind) -> bool:
        return self.applies_to is None or kind in self.applies_to


ACTIONS: Dict[ActionName, ActionSpec] = {
    ActionName.KILL_PROBE: ActionSpec((Kind.PROBE_HUNG, Kind.PROBE_DEFUNCT, Kind.DOMCAPS_HUNG)),
    ActionName.REMOVE_STALE_DIR: ActionSpec((Kind.PROBE_DIR_STALE,)),
    ActionName.QUARANTINE_CACHE: ActionSpec(None, host_wide=True),
    ActionName.RESTART_LIBVIRT: ActionSpec(None, host_wide=True),
    ActionName.ALERT: ActionSpec(None),
}
assert set(ACTIONS) == set(ActionName), "one registry: every action has its spec"

# Actions whose effect reaches beyond the processes of one probe: only on HOST grounds (decide/grounds.py).
HOST_WIDE_ACTIONS = tuple(name for name, spec in ACTIONS.items() if spec.host_wide)


class Grounds(enum.Enum):
    """What a finding rests on, and so what it may drive: the rule, applied in decide/grounds.py."""

    FORGEABLE = "forgeable"  # the qemu user (or any local user) could have made it: its own processes, its own budget
    LIBVIRTS = "libvirts"  # libvirt's, but in the qemu user's hands: killed, never host-wide
    HOST = "host"  # from below the qemu user: libvirt itself, the kernel, root's state, a probe run as libvirt's uid

    @property
    def proven(self) -> bool:
        """libvirt's own evidence (the `proven` metric label and evidence key): anything but forgeable."""
        return self is not Grounds.FORGEABLE


class Role(Word):
    """What a process is to its probe, in qemu's -daemonize double fork."""

    FIRST = "first"  # started by libvirt, waits on the daemonize pipe
    INTERMEDIATE = "intermediate"  # forked the daemon and exited; a zombie its parent never reaped
    DAEMON = "daemon"  # the emulator proper; its pid is in qmp.pid
    UNKNOWN = "unknown"  # names the dir, but fits none of the above


@dataclass(frozen=True)
class Process:
    """One /proc entry, as much as the watchdog needs of it."""

    pid: int
    ppid: int
    state: str  # the one-letter state of /proc/PID/stat
    comm: str
    start_boot_s: float  # start time, seconds since boot (immune to wall clock jumps)
    uid: Optional[int] = None
    cmdline: Tuple[str, ...] = ()
    kthread: bool = False  # PF_KTHREAD: the kernel's own thread (kvm-pit/1234), never an emulator
    # its command line could not be read (the read waits on its memory-map lock): what it names is not known
    cmdline_unread: bool = False

    @property
    def is_zombie(self) -> bool:
        return self.state == "Z"


@dataclass(frozen=True)
class PidfileRead:
    """What a probe's qmp.pid said: a pid, or why it could not be used."""

    pid: Optional[int]
    problem: Optional[str] = None  # e.g. "missing", "not a regular file", "not a number"


@dataclass(frozen=True)
class ProbeMember:
    process: Process
    role: Role


@dataclass(frozen=True)
class Probe:
    """A qmp-XXXXXX dir and the processes that belong to it."""

    path: str
    made_wall: float  # when the dir was made (statx birth time where the fs has one)
    age_s: float
    pidfile: PidfileRead
    members: Tuple[ProbeMember, ...] = ()
    # a pidfile that names a process which does not belong here, with why
    pidfile_rejected: Optional[str] = None
    owner_uid: Optional[int] = None  # who owns the dir; members run as this uid
    # how the scan knows libvirt made it (a member is, or was seen as, the child of a
    # libvirt daemon that runs as root, or as the session's user); None: not proven
    proof: Optional[str] = None
    # its members run as the uid of the libvirt daemon that made it (root; a session libvirt's user), not a qemu user's
    as_libvirt: bool = False
    # a member stopped (state T/t) or traced (TracerPid): held by its own uid or a debugger,
    # not hung by the host; None: nothing holds it
    held: Optional[str] = None
    # processes whose command line could not be read that pass every other membership rule: they may be its own,
    # so the dir is never stale while they run (and they are never its members)
    unread_pids: Tuple[int, ...] = ()

    def pids(self, role: Optional[Role] = None) -> Tuple[int, ...]:
        return tuple(m.process.pid for m in self.members if role is None or m.role == role)

    @property
    def live_members(self) -> Tuple[ProbeMember, ...]:
        return tuple(m for m in self.members if not m.process.is_zombie)


@dataclass(frozen=True)
class Defunct:
    """A zombie emulator process and the parent that has not reaped it."""

    zombie: Process
    parent: Optional[Process]
    parent_kind: str  # "probe", "libvirt", "init", "other"
    probe_path: Optional[str]
    age_s: float


@dataclass(frozen=True)
class LatencyResult:
    """One getDomainCapabilities probe: how far it got and how long it took."""

    reachable: Optional[bool]  # None: connect neither answered nor failed in time
    answered: bool
    connect_ms: Optional[float] = None
    domcaps_ms: Optional[float] = None
    timed_out: bool = False
    error: Optional[str] = None
    libvirt_version: Optional[int] = None
    qemu_version: Optional[int] = None  # getVersion, asked once capabilities answered (the default emulator's)
    skipped: Optional[str] = None  # why no call was made


@dataclass(frozen=True)
class DirFlood:
    """A probe base with more qmp-XXXXXX dirs than are tracked (detect.max_dirs_per_base)."""

    base: str
    total: int
    tracked: int


@dataclass(frozen=True)
class MissingDir:
    """A configured probe dir that does not exist (or is hidden from the watchdog)."""

    path: str
    missing_s: float  # for how long, by the monotonic clock, since the watchdog first saw it missing


@dataclass(frozen=True)
class Observation:
    """Everything one scan saw; read-only, taken in one pass."""

    taken_wall: float
    uptime_s: float = 0.0  # seconds since boot when taken: process ages are measured on it
    probes: Tuple[Probe, ...] = ()
    defunct: Tuple[Defunct, ...] = ()
    libvirt_pids: Tuple[int, ...] = ()
    cache_dir: str = ""
    cache_entries: Optional[Tuple[str, ...]] = None  # None: the dir could not be read
    kernel_release: str = ""
    kernel_last_good: Optional[str] = None
    latency: Optional[LatencyResult] = None
    floods: Tuple[DirFlood, ...] = ()
    missing_dirs: Tuple[MissingDir, ...] = ()
    cache_owner_uid: Optional[int] = None
    # every probe base is owned by libvirt's own uid (qemu.conf user = "root"; a session libvirt): its probes run as
    # libvirt, and nothing of the qemu user's can fail or hang them
    probes_as_libvirt: bool = False
    # libvirt's running guests (emulators.why_not_guest), as of the last full walk, less those gone since
    guests: Tuple[int, ...] = ()  # their pids
    errors: Tuple[Problem, ...] = ()  # what could not be observed (makes the result UNKNOWN)


def _plain(value: object) -> object:
    """A JSON value from an evidence field: tuples as lists, nested facts as their JSON."""
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return to_json()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


OMIT_IF_NONE = {"omit_if_none": True}  # an evidence field that is left out of the JSON while it is None
AS_DIAGNOSIS = {"json": "diagnosis"}  # a family's diagnosis field: `diagnosis` in the JSON, `diagnosis()` the question


@dataclass(frozen=True)
class Evidence:
    """What a finding rests on: one frozen dataclass per finding family (decide/evidence.py).

    The questions the stages after assess ask of any finding have one answer here each
    (None or empty where a family has no such thing); everything else is its family's own."""

    def to_json(self) -> Dict[str, object]:
        out: Dict[str, object] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.metadata.get("omit_if_none"):
                continue
            out[f.metadata.get("json", f.name)] = _plain(value)
        return out

    def probe_path(self) -> Optional[str]:
        """The probe dir the finding is about: what kill_probe and remove_stale_dir act on."""
        return None

    def pid_list(self) -> Tuple[int, ...]:
        return ()

    def age(self) -> Optional[float]:
        """Seconds the probe has existed."""
        return None

    def latency(self) -> Optional[float]:
        """The getDomainCapabilities latency, ms."""
        return None

    def diagnosis(self) -> Optional[Dict[str, object]]:
        """Why, as diagnosed: at least cause and what_to_do."""
        return None

    def cause(self) -> Optional[str]:
        found = self.diagnosis()
        cause = found.get("cause") if found else None
        return cause if isinstance(cause, str) else None


@dataclass(frozen=True)
class Finding:
    """One finding of the contract. proven: libvirt's own evidence, beyond what the qemu user could forge.

    grounds says more (Grounds): host-wide actions act only on HOST grounds, actions on forgeable
    findings draw on a budget of their own (docs/THREAT-MODEL.md). Given only `proven`, a finding
    rests on HOST grounds when proven (libvirt-level kinds always are), else on forgeable ones."""

    kind: Kind
    severity: Severity
    subject: str
    since: float  # wall time the condition began, as best known
    message: str
    evidence: Evidence = field(default_factory=Evidence)
    proven: bool = False
    grounds: Optional[Grounds] = None  # None: from `proven` (read it as rests_on)

    @classmethod
    def new(
        cls, kind: Kind, subject: str, since: float, message: str, evidence: Evidence, on: Optional[Grounds] = None
    ) -> Finding:
        """Of its kind's severity. on: what it rests on (decide/grounds.py); None: its kind's default
        (libvirt-level: HOST, else forgeable)."""
        return cls(kind, KINDS[kind].severity, subject, since, message, evidence, grounds=on)

    def __post_init__(self) -> None:
        if self.grounds is None:
            libvirts = self.proven or self.kind in LIBVIRT_LEVEL_KINDS  # what libvirt itself answers
            object.__setattr__(self, "grounds", Grounds.HOST if libvirts else Grounds.FORGEABLE)
        object.__setattr__(self, "proven", self.rests_on.proven)

    @property
    def rests_on(self) -> Grounds:
        return self.grounds or Grounds.FORGEABLE

    @property
    def host_wide_ok(self) -> bool:
        """May a host-wide action (cache quarantine, libvirt restart) act on it? Only from below the qemu user."""
        return self.grounds is Grounds.HOST

    @property
    def key(self) -> Tuple[Kind, str]:
        return (self.kind, self.subject)

    def evidence_json(self) -> Dict[str, object]:
        return {**self.evidence.to_json(), "proven_libvirt": self.proven, "grounds": self.rests_on.value}

    def to_json(self) -> Dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity.label,
            "subject": self.subject,
            "since": iso_utc(self.since),
            "message": self.message,
            "evidence": self.evidence_json(),
        }
