"""What the daemon saw last, kept in state_dir/status.json for `kvm-watchdog status`.

The daemon writes it atomically after each scan (StateStore), so `status` reads a
whole picture or the previous one, never half of one; the open findings in it are
also the ledger a restarted daemon picks up.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence

from ..durations import format_duration
from ..model import Finding, Observation
from .render import summary, worst_first

STATUS_FILE = "status.json"
SCAN_FILE = "scan.json"  # the per-scan figures: last scan, scan count, STATUS line


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
    lines.append(f"kvm-watchdog {status.get('version', '?')}, pid {pid}: {running}; last scan {status.get('last_scan_utc', '?')}{age}")
    lines.append(f"status: {status.get('status_line', '')}")
    lines.append("remediation: " + ("PAUSED (the limits were reached)" if status.get("paused") else "active"))
    findings = status.get("open") or []
    lines.append(f"open findings: {len(findings)}")
    for f in findings:
        lines.append(f"  {str(f.get('severity', '')).upper()} {f.get('kind')} since {f.get('since')}: {f.get('message')}")
    actions = status.get("recent_actions") or []
    lines.append(f"recent actions: {len(actions)}")
    for a in actions[-10:]:
        detail = f" ({a.get('detail')})" if a.get("detail") else ""
        lines.append(f"  {a.get('at_utc')} {a.get('action')} [{a.get('policy')}] {a.get('subject')}: {a.get('result')}{detail}")
    for e in status.get("errors") or []:
        lines.append(f"problem: {e}")
    return "\n".join(lines)
