"""What the daemon is handed: its long-lived collaborators, made once by the composition root (service.app)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Sequence

from ..config import Config
from ..decide.condition import ConditionTracker
from ..decide.ledger import FindingLedger
from ..decide.policy import Lane
from ..observe.watch import DirWatch
from ..report.events import EventSink
from ..report.figures import Figures, Outlet
from ..report.notify import Notifier
from .hooks import Hooks
from .pipeline import Pipeline
from .runner import ActionRunner, Waker


@dataclass
class Wiring:
    """The daemon's long-lived collaborators, made once by the composition root (service.app.build_daemon)."""

    sink: EventSink
    notifier: Notifier
    waker: Waker
    lanes: Dict[Lane, ActionRunner]  # a worker each: libvirt's own evidence never waits behind forged work
    watch: DirWatch
    ledger: FindingLedger  # read back from the previous daemon's status
    recent: Sequence[Dict[str, Any]]
    condition: ConditionTracker  # vm_starts_blocked as the previous daemon left it
    hooks: Hooks  # the operator's hooks, listening to the sink
    builder: Callable[[Config], Pipeline]  # the per-config parts, again on every reload
    watch_for: Callable[[Config], DirWatch]
    figures: Figures  # counted whatever the config; exported where an outlet is on
    outlet: Outlet
    outlet_for: Callable[[Config], Outlet]
