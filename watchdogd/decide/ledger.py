"""Which findings are open, so that each occurrence is reported once when it opens and once when it resolves.

A probe hung for a day is one open event and one resolved event, not one per scan.
The ledger is saved with the daemon's status, so a restarted daemon neither opens
again what it had already reported nor forgets to resolve what ended while it was
down.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import AbstractSet, Any, Dict, List, Mapping, Sequence, Tuple

from ..kinds import FINDING_KINDS, Kind
from ..model import Finding
from .evidence import Recorded

Key = Tuple[Kind, str]


@dataclass(frozen=True)
class OpenFinding:
    finding: Finding  # as last seen (its evidence follows the condition)
    opened_at: float  # wall time the open event was sent


@dataclass(frozen=True)
class Change:
    opened: Tuple[Finding, ...]
    resolved: Tuple[Tuple[Finding, float], ...]  # the finding as last seen, seconds it was open
    open: Tuple[Finding, ...] = ()  # this scan's findings that are open now: past their grace (shown, acted on)


class FindingLedger:
    def __init__(self, open_findings: Sequence[OpenFinding] = ()):
        self.open: Dict[Key, OpenFinding] = {o.finding.key: o for o in open_findings}
        self.pending: Dict[Key, float] = {}  # seen, not open yet: wall time first seen (detect.grace)

    def update(
        self,
        findings: Sequence[Finding],
        now: float,
        hold: AbstractSet[Key] = frozenset(),
        grace: Mapping[Kind, float] = MappingProxyType({}),
    ) -> Change:
        """`hold`: keys being acted on right now; they stay open until the action is reported.

        `grace`: kind -> seconds its condition must hold before it opens; one that goes
        before that never opens (a normal moment of a starting libvirt is no news).
        """
        current = {f.key: f for f in findings}
        self.pending = {k: self.pending.get(k, now) for k in current if k not in self.open}
        waiting = {k for k, first in self.pending.items() if now - first < grace.get(k[0], 0.0)}
        current = {k: f for k, f in current.items() if k not in waiting}
        current.update({k: o.finding for k, o in self.open.items() if k in hold and k not in current})
        opened = tuple(f for k, f in current.items() if k not in self.open)
        resolved = tuple((o.finding, max(0.0, now - o.opened_at)) for k, o in self.open.items() if k not in current)
        self.open = {k: OpenFinding(f, self.open[k].opened_at if k in self.open else now) for k, f in current.items()}
        self.pending = {k: t for k, t in self.pending.items() if k in waiting}
        return Change(opened, resolved, tuple(f for f in findings if f.key in self.open))

    def due(self, grace: Mapping[Kind, float]) -> Tuple[float, ...]:
        """Wall times at which a pending finding's grace runs out (the daemon scans then)."""
        return tuple(first + grace.get(k[0], 0.0) for k, first in self.pending.items())

    def to_json(self) -> List[Dict[str, Any]]:
        return [
            dict(o.finding.to_json(), since_wall=o.finding.since, opened_at=o.opened_at) for o in self.open.values()
        ]

    @classmethod
    def from_json(cls, data: Any) -> FindingLedger:
        """Lenient: entries that do not parse are dropped (they are re-found by the next scan)."""
        found: List[OpenFinding] = []
        for item in data if isinstance(data, list) else []:
            try:
                kind = Kind(item["kind"])  # a kind this version lacks: dropped
                recorded = dict(item.get("evidence") or {})
                finding = Finding(
                    kind=kind,
                    severity=FINDING_KINDS[kind],
                    subject=str(item["subject"]),
                    since=float(item["since_wall"]),
                    message=str(item.get("message", "")),
                    evidence=Recorded(recorded),
                    grounds=Recorded.grounds_in(recorded),
                )
                found.append(OpenFinding(finding, float(item["opened_at"])))
            except (KeyError, TypeError, ValueError):
                continue
        return cls(found)
