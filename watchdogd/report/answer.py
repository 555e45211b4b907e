"""The answer a command gives: the exit status monitoring reads, and `check`'s and `remediate`'s JSON (their text:
report.text)."""

from __future__ import annotations

import enum
import json
from typing import Any, Dict, List, Sequence

from ..kinds import Severity
from ..model import Finding


class ExitStatus(enum.IntEnum):
    """The monitoring-plugin convention (Nagios, Icinga, Sensu, check_mk)."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3
    CONFIG_ERROR = 2  # `run`, `config check`, `config show`: the config is not valid (the plugin convention's 2)


def exit_status(findings: Sequence[Finding], errors: Sequence[object]) -> ExitStatus:
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


def as_json(findings: Sequence[Finding], actions: Sequence[Dict[str, Any]], errors: Sequence[object]) -> str:
    """errors: what could not be seen or saved (Problems), as their words."""
    body: Dict[str, Any] = {"findings": [f.to_json() for f in findings], "actions": list(actions)}
    if errors:
        body["errors"] = [str(e) for e in errors]
    return json.dumps(body, indent=2, sort_keys=False)
