"""What `check` and `remediate` print, and the exit status monitoring reads from it."""

from __future__ import annotations

import enum
import json
from typing import Any, Dict, List, Sequence

from ..model import Finding, Observation, Severity


class ExitStatus(enum.IntEnum):
    """The monitoring-plugin convention (Nagios, Icinga, Sensu, check_mk)."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


def exit_status(findings: Sequence[Finding], errors: Sequence[str]) -> ExitStatus:
    """Critical beats unknown (a hung probe is certain even if one dir was unreadable);
    unknown beats warning (something could not be seen at all)."""
    worst = max((f.severity for f in findings), default=Severity.INFO)
    if worst == Severity.CRITICAL:
        return ExitStatus.CRITICAL
    if errors:
        return ExitStatus.UNKNOWN
    if worst == Severity.WARNING:
        return ExitStatus.WARNING
    return ExitStatus.OK


def worst_first(findings: Sequence[Finding]) -> List[Finding]:
    """Findings ordered as a person reads them: critical first, then by kind and subject."""
    return sorted(findings, key=lambda f: (-int(f.severity), f.kind, f.subject))


def as_json(findings: Sequence[Finding], actions: Sequence[Dict[str, Any]], errors: Sequence[str]) -> str:
    body: Dict[str, Any] = {"findings": [f.to_json() for f in findings], "actions": list(actions)}
    if errors:
        body["errors"] = list(errors)
    return json.dumps(body, indent=2, sort_keys=False)


def human(findings: Sequence[Finding], actions: Sequence[Dict[str, Any]], obs: Observation) -> str:
    """One line per finding, action and error, worst first; a summary when all is well."""
    lines = []
    for f in worst_first(findings):
        lines.append(f"{f.severity.label.upper()} {f.kind}: {f.message}")
    for a in actions:
        detail = f" ({a['detail']})" if a.get("detail") else ""
        lines.append(f"ACTION {a['action']} [{a['policy']}] {a['subject']}: {a['result']}{detail}")
    for e in obs.errors:
        lines.append(f"UNKNOWN {e}")
    if not lines:
        lines.append("OK: " + summary(obs))
    return "\n".join(lines)


def summary(obs: Observation) -> str:
    """A one-line picture of the host, for `check` and the daemon's STATUS=."""
    parts = [f"{len(obs.probes)} probe dir{'s' if len(obs.probes) != 1 else ''}"]
    lat = obs.latency
    if lat is not None:
        if lat.skipped:
            parts.append(f"latency probe skipped: {lat.skipped}")
        elif lat.answered and lat.domcaps_ms is not None:
            parts.append(f"domcapabilities in {lat.domcaps_ms:.0f} ms")
        elif lat.timed_out:
            parts.append("domcapabilities timed out")
        else:
            parts.append("libvirt did not answer")
    if obs.cache_entries is not None:
        parts.append(f"{len(obs.cache_entries)} cache entr{'ies' if len(obs.cache_entries) != 1 else 'y'}")
    return ", ".join(parts)
