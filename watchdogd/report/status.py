"""What the daemon saw last, kept in state_dir for `kvm-watchdog status`: this module owns the schema.

status.json (written when it changes) holds the open findings, recent actions and
the breaker; scan.json (every scan, small) the time and count of scans and the
STATUS= line. Both are replaced atomically (StateStore), so `status` reads a whole
picture or the previous one; the open findings are also the ledger a restarted
daemon picks up (`restore`).
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .. import __version__
from ..decide.condition import ConditionTracker
from ..decide.ledger import FindingLedger
from ..model import Observation
from ..state import StateStore
from ..timefmt import iso_utc

STATUS_FILE = "status.json"
SCAN_FILE = "scan.json"  # the per-scan figures: last scan, scan count, STATUS line
MAX_GUEST_PIDS = 1000  # of the guests counted, the pids scan.json names


@dataclass(frozen=True)
class DaemonView:
    """What status.json says: everything but the per-scan figures."""

    started_at: float
    config: Optional[str]
    interval: float
    paused: bool
    ledger: FindingLedger
    recent_actions: Sequence[Dict[str, Any]]
    errors: Sequence[str]
    events_sent: Dict[str, int]
    stopped_at: Optional[float] = None
    condition: Optional[Dict[str, object]] = None  # vm_starts_blocked, as last told

    def document(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = {
            "pid": os.getpid(),
            "version": __version__,
            "started_at": self.started_at,
            "config": self.config,
            "interval": self.interval,
            "paused": self.paused,
            "open": self.ledger.to_json(),
            "recent_actions": list(self.recent_actions),
            "errors": list(self.errors),
            "events_sent": dict(self.events_sent),
        }
        if self.condition is not None:
            doc["condition"] = self.condition
        if self.stopped_at is not None:
            doc["stopped_at"] = self.stopped_at
        return doc


def scan_document(obs: Observation, scans: int, line: str) -> Dict[str, Any]:
    """scan.json: the figures that change every scan."""
    return {
        "pid": os.getpid(),
        "last_scan": obs.taken_wall,
        "last_scan_utc": iso_utc(obs.taken_wall),
        "scans": scans,
        "status_line": line,
        "libvirt_running": bool(obs.libvirt_pids),
        "guests": len(obs.guests),  # libvirt's running guests, as the latency gate counts them
        "guest_pids": list(obs.guests[:MAX_GUEST_PIDS]),
    }


def restore(state: StateStore) -> Tuple[FindingLedger, List[Dict[str, Any]], ConditionTracker]:
    """The ledger, the recent actions and the host condition a previous daemon left in status.json (nothing, when
    there is none): a restart re-tells only a change."""
    previous = state.read_json(STATUS_FILE)
    if not isinstance(previous, dict):
        return FindingLedger(), [], ConditionTracker()
    recent = previous.get("recent_actions")
    actions = [a for a in recent if isinstance(a, dict)] if isinstance(recent, list) else []
    return FindingLedger.from_json(previous.get("open")), actions, ConditionTracker.from_json(previous.get("condition"))


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _dicts(value: Any) -> Tuple[Dict[str, Any], ...]:
    return tuple(v for v in value if isinstance(v, dict)) if isinstance(value, list) else ()


@dataclass(frozen=True)
class StatusDocument:
    """status.json with the latest scan.json of the same daemon laid over it, as `status` and NPD read it. Lenient:
    a field another version lacks, or holds in another type, reads as not known."""

    raw: Dict[str, Any]  # all of it, for `status --json`
    pid: Optional[int]
    version: str
    last_scan: Optional[float]
    last_scan_utc: str
    interval: Optional[float]
    status_line: str
    paused: bool
    stopped: bool
    open: Tuple[Dict[str, Any], ...]
    recent_actions: Tuple[Dict[str, Any], ...]
    errors: Tuple[str, ...]
    blocked_by: Optional[Tuple[str, ...]]  # the kinds VM starts are blocked by; None: not blocked

    @classmethod
    def of(cls, status: Dict[str, Any], scan: Any = None) -> StatusDocument:
        raw = dict(status)
        if isinstance(scan, dict) and scan.get("pid") == status.get("pid"):
            raw.update({k: v for k, v in scan.items() if k != "pid"})
        pid = raw.get("pid")
        errors, said = raw.get("errors"), raw.get("condition")
        condition: Dict[str, Any] = said if isinstance(said, dict) else {}
        reasons = _dicts(condition.get("reasons"))
        return cls(
            raw=raw,
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None,
            version=str(raw.get("version", "?")),
            last_scan=_number(raw.get("last_scan")),
            last_scan_utc=str(raw.get("last_scan_utc", "?")),
            interval=_number(raw.get("interval")),
            status_line=str(raw.get("status_line", "")),
            paused=raw.get("paused") is True,
            stopped=bool(raw.get("stopped_at")),
            open=_dicts(raw.get("open")),
            recent_actions=_dicts(raw.get("recent_actions")),
            errors=tuple(str(e) for e in errors) if isinstance(errors, list) else (),
            blocked_by=tuple(sorted({str(r.get("kind")) for r in reasons}))
            if condition.get("state") == "open"
            else None,
        )

    @classmethod
    def read(cls, state: StateStore) -> Optional[StatusDocument]:
        """None when there is none (or it is not a JSON object: the store says why)."""
        status = state.read_json(STATUS_FILE)
        return cls.of(status, state.read_json(SCAN_FILE)) if isinstance(status, dict) else None

    @property
    def running(self) -> bool:
        """Is the daemon that wrote it still there (and did not say it stopped)?"""
        return pid_alive(self.pid) and not self.stopped


def pid_alive(pid: Optional[int]) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class NpdStatus(enum.IntEnum):
    """node-problem-detector's custom-plugin exit codes (not the monitoring-plugin ones)."""

    OK = 0
    PROBLEM = 1
    UNKNOWN = 2


NPD_LINE = 80  # NPD keeps a plugin's first line, and no more than this


def npd_answer(status: Optional[StatusDocument], now: float) -> Tuple[NpdStatus, str]:
    """Are VM starts blocked here, from the running daemon's saved state alone (no libvirt call: NPD allows 5 s)?
    Not by pid: NPD may run in a pid namespace of its own; a daemon gone stale is caught by its scan's age.

    >>> npd_answer(None, 0.0)[0].name
    'UNKNOWN'
    >>> doc = {"last_scan": 100.0, "interval": 5.0, "condition": {"state": "open", "reasons": [{"kind": "probe_hung"}]}}
    >>> npd_answer(StatusDocument.of(doc), 101.0)
    (<NpdStatus.PROBLEM: 1>, 'VM starts blocked: probe_hung')
    """
    if status is None:
        return NpdStatus.UNKNOWN, "no kvm-watchdog state: is the daemon running?"
    last, interval = status.last_scan, status.interval
    if status.stopped or last is None or interval is None:
        return NpdStatus.UNKNOWN, "kvm-watchdog is not running"
    if now - last > 3 * interval + 30:
        return NpdStatus.UNKNOWN, f"kvm-watchdog's last scan is {int(now - last)} s old"
    if status.blocked_by is None:
        return NpdStatus.OK, "VM starts not blocked"
    return NpdStatus.PROBLEM, f"VM starts blocked: {', '.join(status.blocked_by)}"[:NPD_LINE]
