"""What the daemon saw last, kept in state_dir for `kvm-watchdog status`: this module owns the schema.

status.json (written when it changes) holds the open findings, recent actions and
the breaker; scan.json (every scan, small) the time and count of scans and the
STATUS= line. Both are replaced atomically (StateStore), so `status` reads a whole
picture or the previous one; the open findings are also the ledger a restarted
daemon picks up (`restore`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .. import __version__
from ..decide.ledger import FindingLedger
from ..durations import format_duration
from ..model import Finding, Observation
from ..state import StateStore
from ..timefmt import iso_utc
from .render import summary, worst_first

STATUS_FILE = "status.json"
SCAN_FILE = "scan.json"  # the per-scan figures: last scan, scan count, STATUS line


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
        "guests": obs.guests,  # libvirt's running guests, as the latency gate counts them
    }


def restore(state: StateStore) -> Tuple[FindingLedger, List[Dict[str, Any]]]:
    """The ledger and the recent actions a previous daemon left in status.json (nothing, when there is none)."""
    previous = state.read_json(STATUS_FILE)
    if not isinstance(previous, dict):
        return FindingLedger(), []
    recent = previous.get("recent_actions")
    return FindingLedger.from_json(previous.get("open")), [a for a in recent if isinstance(a, dict)] if isinstance(
        recent, list
    ) else []


def merged(status: Dict[str, Any], scan: Any) -> Dict[str, Any]:
    """status.json with the latest scan.json of the same daemon laid over it."""
    out = dict(status)
    if isinstance(scan, dict) and scan.get("pid") == status.get("pid"):
        out.update({k: v for k, v in scan.items() if k != "pid"})
    return out


def status_line(findings: Sequence[Finding], obs: Observation, paused: bool) -> str:
    """One line for systemd's STATUS= (`systemctl status` shows it): the worst first."""
    parts = []
    for f in worst_first(findings):
        parts.append(f"{f.severity.label.upper()} {f.kind} {os.path.basename(f.subject) or f.subject}")
    head = "; ".join(parts[:3]) + (f" (+{len(parts) - 3} more)" if len(parts) > 3 else "") if parts else "OK"
    tail = summary(obs)
    if obs.errors:
        tail += f", {len(obs.errors)} problem{'s' if len(obs.errors) != 1 else ''} reading the host"
    if paused:
        tail += ", remediation paused"
    return f"{head} | {tail}"


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


def render(status: Dict[str, Any], now: float) -> str:
    """The human form of `kvm-watchdog status`."""
    lines: List[str] = []
    pid = status.get("pid")
    last = status.get("last_scan")
    age = f" ({format_duration(max(0, round(now - last)))} ago)" if isinstance(last, (int, float)) else ""
    running = "running" if is_running(status) else "NOT running"
    lines.append(
        f"kvm-watchdog {status.get('version', '?')}, pid {pid}: {running}; last scan "
        f"{status.get('last_scan_utc', '?')}{age}"
    )
    lines.append(f"status: {status.get('status_line', '')}")
    lines.append("remediation: " + ("PAUSED (the limits were reached)" if status.get("paused") else "active"))
    findings = status.get("open") or []
    lines.append(f"open findings: {len(findings)}")
    for f in findings:
        lines.append(
            f"  {str(f.get('severity', '')).upper()} {f.get('kind')} since {f.get('since')}: {f.get('message')}"
        )
    actions = status.get("recent_actions") or []
    lines.append(f"recent actions: {len(actions)}")
    for a in actions[-10:]:
        detail = f" ({a.get('detail')})" if a.get("detail") else ""
        lines.append(
            f"  {a.get('at_utc')} {a.get('action')} [{a.get('policy')}] {a.get('subject')}: {a.get('result')}{detail}"
        )
    for e in status.get("errors") or []:
        lines.append(f"problem: {e}")
    return "\n".join(lines)
