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


def merged(status: Dict[str, Any], scan: Any) -> Dict[str, Any]:
    """status.json with the latest scan.json of the same daemon laid over it."""
    out = dict(status)
    if isinstance(scan, dict) and scan.get("pid") == status.get("pid"):
        out.update({k: v for k, v in scan.items() if k != "pid"})
    return out


def pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_running(status: Dict[str, Any]) -> bool:
    """Is the daemon that wrote this status still there (and did not say it stopped)?"""
    return pid_alive(status.get("pid")) and not status.get("stopped_at")


class NpdStatus(enum.IntEnum):
    """node-problem-detector's custom-plugin exit codes (not the monitoring-plugin ones)."""

    OK = 0
    PROBLEM = 1
    UNKNOWN = 2


NPD_LINE = 80  # NPD keeps a plugin's first line, and no more than this


def npd_answer(status: Optional[Dict[str, Any]], running: bool, now: float) -> Tuple[NpdStatus, str]:
    """Are VM starts blocked here, from the running daemon's saved state alone (no libvirt call: NPD allows 5 s)?

    >>> npd_answer(None, False, 0.0)[0].name
    'UNKNOWN'
    >>> doc = {"last_scan": 100.0, "interval": 5.0, "condition": {"state": "open", "reasons": [{"kind": "probe_hung"}]}}
    >>> npd_answer(doc, True, 101.0)
    (<NpdStatus.PROBLEM: 1>, 'VM starts blocked: probe_hung')
    """
    if status is None:
        return NpdStatus.UNKNOWN, "no kvm-watchdog state: is the daemon running?"
    last, interval = status.get("last_scan"), status.get("interval")
    if not running or not isinstance(last, (int, float)) or not isinstance(interval, (int, float)):
        return NpdStatus.UNKNOWN, "kvm-watchdog is not running"
    if now - last > 3 * interval + 30:
        return NpdStatus.UNKNOWN, f"kvm-watchdog's last scan is {int(now - last)} s old"
    condition = status.get("condition") or {}
    if condition.get("state") != "open":
        return NpdStatus.OK, "VM starts not blocked"
    kinds = sorted({str(r.get("kind")) for r in condition.get("reasons") or [] if isinstance(r, dict)})
    return NpdStatus.PROBLEM, f"VM starts blocked: {', '.join(kinds)}"[:NPD_LINE]
