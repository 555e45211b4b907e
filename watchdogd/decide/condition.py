"""The host condition the fleet's scheduler needs: `vm_starts_blocked`, derived from the open findings.

A host with a hung or failing probe stays "up" to nova, KubeVirt and oVirt and keeps receiving
VMs it cannot start. The condition is open while a finding that stops VM starts here is open
(a hung probe of libvirt's, getDomainCapabilities hung or failing, libvirt unreachable, a probe
libvirt says failed, KVM unusable); forgeable findings never open it (the qemu user's own
processes named like a probe block nothing). The findings have had their grace already; the
condition resolves only once no reason has been left for RESOLVE_AFTER_S, so one that flickers
shut and open again is told once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..config.schema import CONDITION
from ..kinds import Kind
from ..model import Finding
from ..timefmt import iso_utc

NAME = CONDITION
BLOCKING_KINDS = (
    Kind.PROBE_HUNG,
    Kind.DOMCAPS_HUNG,
    Kind.DOMCAPS_FAILED,
    Kind.LIBVIRT_UNREACHABLE,
    Kind.PROBE_FAILED,
    Kind.KVM_UNUSABLE,
)
RESOLVE_AFTER_S = 10.0


@dataclass(frozen=True)
class Reason:
    kind: str
    subject: str
    message: str

    def to_json(self) -> Dict[str, str]:
        return {"kind": self.kind, "subject": self.subject, "message": self.message}


@dataclass(frozen=True)
class Condition:
    """The condition as it stands: open or not, since when (wall), and why."""

    blocked: bool
    since: Optional[float] = None
    reasons: Tuple[Reason, ...] = ()

    @property
    def summary(self) -> str:
        kinds = sorted({r.kind for r in self.reasons})
        return f"VM starts blocked ({', '.join(kinds)})" if self.blocked else "VM starts not blocked"

    def to_json(self) -> Dict[str, object]:
        return {
            "name": NAME,
            "state": "open" if self.blocked else "resolved",
            "since": iso_utc(self.since) if self.since is not None else None,
            "since_wall": self.since,
            "reasons": [r.to_json() for r in self.reasons],
        }


def reasons_in(findings: Sequence[Finding]) -> Tuple[Reason, ...]:
    """What stops VM starts among the open findings: libvirt's own evidence only."""
    blocking = [f for f in findings if f.kind in BLOCKING_KINDS and f.proven]
    return tuple(
        Reason(f.kind, f.subject, f.message)
        for f in sorted(blocking, key=lambda f: (BLOCKING_KINDS.index(f.kind), f.subject))
    )


class ConditionTracker:
    """Opens at the first reason, resolves RESOLVE_AFTER_S after the last one went; each change told once."""

    def __init__(self, current: Optional[Condition] = None):
        self.current = current or Condition(False)
        self._clear_since: Optional[float] = None

    def update(self, findings: Sequence[Finding], now: float) -> Optional[Condition]:
        """The condition after this scan's open findings; returned only when it changed (opened or resolved)."""
        reasons = reasons_in(findings)
        if reasons:
            self._clear_since = None
            was_blocked = self.current.blocked
            self.current = Condition(True, self.current.since if was_blocked else now, reasons)
            return None if was_blocked else self.current
        if not self.current.blocked:
            return None
        if self._clear_since is None:
            self._clear_since = now
        if now - self._clear_since < RESOLVE_AFTER_S:
            return None
        self.current = Condition(False, now)
        self._clear_since = None
        return self.current

    def due(self) -> List[float]:
        """When a clear condition may resolve (the daemon scans then)."""
        return [self._clear_since + RESOLVE_AFTER_S] if self._clear_since is not None else []

    @classmethod
    def from_json(cls, data: object) -> ConditionTracker:
        """As the last daemon left it (status.json): a restart re-tells only a change."""
        if isinstance(data, dict) and data.get("state") == "open":
            reasons = tuple(
                Reason(str(r.get("kind")), str(r.get("subject")), str(r.get("message", "")))
                for r in data.get("reasons") or []
                if isinstance(r, dict)
            )
            since = data.get("since_wall")
            return cls(Condition(True, float(since) if isinstance(since, (int, float)) else None, reasons))
        return cls()
