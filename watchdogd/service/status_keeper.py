"""What `status` and the journal say between scans: status.json when it changed, scan.json every scan, each problem
once."""

from __future__ import annotations

import collections
from typing import Any, Deque, Dict, List, Optional, Sequence, Set

from ..act.actions import ActionRecord
from ..decide.condition import ConditionTracker
from ..decide.ledger import FindingLedger
from ..model import Observation
from ..problems import Problem
from ..report.events import WARNING, EventSink, lifecycle
from ..report.status import SCAN_FILE, STATUS_FILE, DaemonView, scan_document
from ..state import StateError
from ..timefmt import iso_utc
from .pipeline import Pipeline

RECENT_ACTIONS = 50


class StatusKeeper:
    """The daemon's saved view (status.json, scan.json) and its scan_problem events.

    status.json is rewritten only when what it says changes (its ledger, actions, problems);
    the per-scan figures go to the small scan.json. A problem (an unreadable dir, a full disk)
    is told once when it starts, not every scan."""

    def __init__(
        self,
        sink: EventSink,
        ledger: FindingLedger,
        recent: Sequence[Dict[str, Any]],
        started_wall: float,
        condition: Optional[ConditionTracker] = None,
    ):
        self.sink = sink
        self.ledger = ledger
        self.condition = condition or ConditionTracker()  # vm_starts_blocked, kept in status.json
        self.recent: Deque[Dict[str, Any]] = collections.deque(recent, maxlen=RECENT_ACTIONS)
        self.started_wall = started_wall
        self.problems_seen: Set[str] = set()
        self._saved: Optional[Dict[str, Any]] = None  # what status.json says now (what_it_says), when we wrote it

    def acted(self, record: ActionRecord) -> None:
        self.recent.append(dict(record.to_json(), at=record.at, at_utc=iso_utc(record.at)))

    def report(self, problems: Sequence[Problem], replace: bool = False) -> None:
        """Each new problem once. replace: these are all the problems of a whole scan; one that is gone may be told
        again if it comes back."""
        current = {p.key: p for p in problems}
        for key in sorted(set(current) - self.problems_seen):
            text = current[key]
            self.sink.emit(
                lifecycle(
                    "scan_problem",
                    f"Could not see or save everything: {text}. The watchdog goes on.",
                    WARNING,
                    problem=str(text),
                )
            )
        self.problems_seen = set(current) if replace else self.problems_seen | set(current)

    def write(
        self,
        parts: Pipeline,
        obs: Observation,
        scans: int,
        line: str,
        problems: Sequence[Problem],
        stopped_at: Optional[float] = None,
    ) -> List[Problem]:
        """Save what `status` shows; the problems saving met, if any."""
        status = DaemonView(
            started_at=self.started_wall,
            config=parts.config.source,
            interval=parts.config.interval,
            paused=parts.engine.state.paused,
            ledger=self.ledger,
            recent_actions=list(self.recent),
            errors=[str(p) for p in problems],
            events_sent=self.sink.counts(),
            stopped_at=stopped_at,
            condition=self.condition.current.to_json(),
        ).document()
        out: List[Problem] = []
        said = what_it_says(status)
        if said != self._saved:
            try:
                parts.state.write_json(STATUS_FILE, status)
                self._saved = said
            except StateError as exc:
                self._saved = None
                out.append(exc.problem())
        try:
            parts.state.write_json(SCAN_FILE, scan_document(obs, scans, line), durable=False)
        except StateError as exc:
            out.append(exc.problem())
        return out


def what_it_says(status: Dict[str, Any]) -> Dict[str, Any]:
    """status.json without what moves every scan (an open finding's age, its message's "hung for N s", its
    evidence): a change is a finding opened or resolved, an action, a problem, the breaker. A thousand open
    findings then cost no write a scan (each write is an fsync)."""
    opened = [(f.get("kind"), f.get("subject"), f.get("since_wall"), f.get("severity")) for f in status["open"]]
    return dict(status, open=opened)
