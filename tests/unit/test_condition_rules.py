"""The host condition vm_starts_blocked as pure rules: what opens it, and a flicker told once."""

from __future__ import annotations

from harness.findings import hung_probe

from watchdogd.decide.condition import RESOLVE_AFTER_S, ConditionTracker
from watchdogd.decide.evidence import Latency
from watchdogd.kinds import Kind, Severity
from watchdogd.model import Finding


def test_a_hang_opens_it_at_once_and_a_flicker_shut_and_open_again_is_told_once() -> None:
    tracker = ConditionTracker()
    hang = [hung_probe("/l/qmp-AAAAAA", proven=True)]
    opened = tracker.update(hang, now=100.0)
    assert opened is not None and opened.blocked and [r.kind for r in opened.reasons] == ["probe_hung"]
    assert tracker.update([], now=101.0) is None, "gone for a moment: not resolved yet"
    assert tracker.update(hang, now=105.0) is None, "back within the hold: the same occurrence, not news"
    assert tracker.update([], now=106.0) is None
    assert tracker.due() == [106.0 + RESOLVE_AFTER_S], "the daemon scans when it may resolve"
    resolved = tracker.update([], now=106.0 + RESOLVE_AFTER_S)
    assert resolved is not None and not resolved.blocked


def test_only_what_stops_vm_starts_and_is_libvirts_own_opens_it() -> None:
    tracker = ConditionTracker()
    forged = hung_probe("/l/qmp-FFFFFF", proven=False)
    slow = Finding(Kind.DOMCAPS_SLOW, Severity.WARNING, "qemu:///system", 0.0, "slow", Latency("qemu:///system"))
    assert tracker.update([forged, slow], now=1.0) is None and not tracker.current.blocked, (
        "the qemu user's own process named like a probe blocks nothing; a slow answer is an answer"
    )
    failing = Finding(
        Kind.DOMCAPS_FAILED, Severity.CRITICAL, "qemu:///system", 0.0, "failed", Latency("qemu:///system")
    )
    assert tracker.update([failing], now=2.0) is not None


def test_a_restart_re_tells_only_a_change() -> None:
    tracker = ConditionTracker()
    tracker.update([hung_probe("/l/qmp-AAAAAA", proven=True)], now=100.0)
    again = ConditionTracker.from_json(tracker.current.to_json())
    assert again.current.blocked and again.current.since == 100.0
    assert again.update([hung_probe("/l/qmp-AAAAAA", proven=True)], now=200.0) is None, "still open: no news"
