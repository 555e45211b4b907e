"""One scan, told: a ScanReport goes to each outlet in turn (the journal, status.json and scan.json, the metrics,
systemd's STATUS=), as node-problem-detector's exporters each take every problem. Each says what it could not
save; the daemon tells those once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

from ..decide.condition import Condition
from ..decide.ledger import Change
from ..model import Finding, Observation
from ..problems import Problem
from ..report import events
from ..report.events import EventSink
from ..report.figures import Figures, Outlet, Snapshot
from ..report.notify import Notifier
from ..typing_compat import Protocol
from .pipeline import Pipeline
from .status_keeper import StatusKeeper
from .wiring import Wiring


@dataclass(frozen=True)
class ScanReport:
    obs: Observation
    findings: Tuple[Finding, ...]  # open now: past their grace
    change: Change  # opened and resolved by this scan
    condition: Condition  # the host condition now
    condition_changed: bool  # opened or resolved by this scan
    line: str  # the one line: systemd's STATUS=, scan.json's status_line
    snapshot: Snapshot  # the gauges
    scans: int
    problems: Tuple[Problem, ...]  # what the scan met before it was told


class ScanOutlet(Protocol):
    def scanned(self, report: ScanReport) -> List[Problem]: ...


class JournalOutlet:
    """Each finding opened and resolved, and the host condition's change, as journal events (the hooks hear
    them there); the counters of findings opened."""

    def __init__(self, sink: EventSink, figures: Figures):
        self.sink = sink
        self.figures = figures

    def scanned(self, report: ScanReport) -> List[Problem]:
        self.figures.opened(report.change.opened)
        for f in report.change.opened:
            self.sink.emit(events.finding_opened(f))
        for f, open_for in report.change.resolved:
            self.sink.emit(events.finding_resolved(f, open_for))
        if report.condition_changed:
            self.sink.emit(events.condition_changed(report.condition))
        return []


class StatusOutlet:
    """status.json when what it says changed, scan.json every scan."""

    def __init__(self, status: StatusKeeper, parts: Pipeline):
        self.status = status
        self.parts = parts

    def scanned(self, report: ScanReport) -> List[Problem]:
        return self.status.write(self.parts, report.obs, report.scans, report.line, report.problems)


class MetricsOutlet:
    """The Prometheus textfile or endpoint, as the config has it."""

    def __init__(self, outlet: Outlet):
        self.outlet = outlet

    def scanned(self, report: ScanReport) -> List[Problem]:
        return self.outlet.publish(report.snapshot)


class NotifyOutlet:
    """systemd: READY=1 with the first scan's line, STATUS= with each one after."""

    def __init__(self, notifier: Notifier):
        self.notifier = notifier

    def scanned(self, report: ScanReport) -> List[Problem]:
        if report.scans == 1:  # the daemon's first scan is its readiness (a reload keeps counting)
            self.notifier.ready(report.line)
        else:
            self.notifier.status(report.line)
        return []


def outlets(wiring: Wiring, status: StatusKeeper, parts: Pipeline) -> List[ScanOutlet]:
    """Who is told of each scan, in order: the journal (and the hooks that hear it), status, metrics, systemd."""
    return [
        JournalOutlet(wiring.sink, wiring.figures),
        StatusOutlet(status, parts),
        MetricsOutlet(wiring.outlet),
        NotifyOutlet(wiring.notifier),
    ]


def tell(told: Sequence[ScanOutlet], report: ScanReport) -> List[Problem]:
    """The report to each outlet in order; what they could not save."""
    unsaved: List[Problem] = []
    for outlet in told:
        unsaved += outlet.scanned(report)
    return unsaved
