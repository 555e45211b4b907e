"""`kvm-watchdog status` and node-problem-detector read what a daemon left, maybe another version's."""

from __future__ import annotations

from watchdogd.report.status import NpdStatus, StatusDocument, npd_answer
from watchdogd.report.text import status_text

STATUS = {"pid": 4242, "version": "0.2.0", "interval": 5.0, "paused": False, "open": [], "errors": []}


def test_the_latest_scan_is_laid_over_its_own_daemons_status_only() -> None:
    doc = StatusDocument.of(STATUS, {"pid": 4242, "last_scan": 100.0, "scans": 7, "status_line": "OK | 0 probes"})
    assert (doc.last_scan, doc.status_line, doc.raw["scans"]) == (100.0, "OK | 0 probes", 7)
    stale = StatusDocument.of(STATUS, {"pid": 1, "last_scan": 200.0})
    assert stale.last_scan is None, "another daemon's scan.json says nothing of this one"


def test_fields_of_another_shape_read_as_not_known_and_npd_says_unknown() -> None:
    odd = StatusDocument.of({"pid": "4242", "last_scan": "soon", "interval": True, "open": {"x": 1}, "errors": "e"})
    assert (odd.pid, odd.last_scan, odd.interval, odd.open, odd.errors) == (None, None, None, (), ())
    assert not odd.running and npd_answer(odd, 101.0) == (NpdStatus.UNKNOWN, "kvm-watchdog is not running")
    assert "pid None: NOT running" in status_text(odd, 101.0)


def test_a_stopped_daemon_or_an_old_scan_is_unknown_to_npd_and_an_open_condition_names_its_kinds() -> None:
    scan = {"pid": 4242, "last_scan": 100.0}
    blocked = dict(STATUS, condition={"state": "open", "reasons": [{"kind": "probe_hung"}, {"kind": "domcaps_hung"}]})
    assert npd_answer(StatusDocument.of(blocked, scan), 101.0) == (
        NpdStatus.PROBLEM,
        "VM starts blocked: domcaps_hung, probe_hung",
    )
    assert npd_answer(StatusDocument.of(dict(blocked, stopped_at=150.0), scan), 151.0)[0] is NpdStatus.UNKNOWN
    assert npd_answer(StatusDocument.of(blocked, scan), 146.0)[1] == "kvm-watchdog's last scan is 46 s old"
