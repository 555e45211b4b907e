"""Events: once each, the contract's fields, and nothing lost when the journal or stderr fails."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Dict, List

from harness.findings import hung_probe, stale_dir

from watchdogd.act.actions import ActionRecord
from watchdogd.act.result import ActionResult
from watchdogd.config import EventsTo
from watchdogd.decide.ledger import FindingLedger
from watchdogd.model import ActionName
from watchdogd.report.events import MESSAGE_IDS, EventSink, action_taken, finding_opened, finding_resolved, lifecycle

HUNG = dataclasses.replace(hung_probe("/d/qmp-abcdef", pids=[7, 8], age_s=61.0, since=100.0), message="hung")
STALE = stale_dir("/d/qmp-zzzzzz", since=50.0)


def test_a_condition_seen_on_every_scan_opens_once_and_resolves_once() -> None:
    ledger = FindingLedger()
    changes = [
        ledger.update(findings, now)
        for now, findings in [(1, [HUNG]), (2, [HUNG]), (3, [HUNG, STALE]), (4, [STALE]), (5, [])]
    ]
    assert [c.opened for c in changes] == [(HUNG,), (), (STALE,), (), ()]
    assert [[(f.kind, round(t)) for f, t in c.resolved] for c in changes] == [
        [],
        [],
        [],
        [("probe_hung", 3)],
        [("probe_dir_stale", 2)],
    ]


def test_a_finding_being_acted_on_stays_open_until_the_action_is_reported() -> None:
    ledger = FindingLedger()
    ledger.update([HUNG], 1)
    held = ledger.update([], 2, hold={HUNG.key})
    assert held.resolved == ()
    assert ledger.update([], 3).resolved[0][0] == HUNG


def test_the_ledger_survives_a_restart_through_json() -> None:
    ledger = FindingLedger()
    ledger.update([HUNG], 10)
    again = FindingLedger.from_json(json.loads(json.dumps(ledger.to_json())))
    assert again.update([HUNG], 20).opened == ()
    assert FindingLedger.from_json([{"kind": "probe_hung"}, "junk", None]).open == {}


def test_events_carry_the_contract_fields() -> None:
    opened = finding_opened(HUNG).journal_fields(0)
    assert opened["MESSAGE_ID"] == MESSAGE_IDS["probe_hung"] and opened["PRIORITY"] == "2"
    assert opened["SYSLOG_IDENTIFIER"] == "kvm-watchdog" and opened["KVMWD_STATE"] == "open"
    assert (
        opened["KVMWD_PIDS"] == "7,8"
        and opened["KVMWD_AGE_S"] == "61.0"
        and opened["KVMWD_PROBE_DIR"] == "/d/qmp-abcdef"
    )
    assert finding_resolved(HUNG, 5).journal_fields(0)["KVMWD_STATE"] == "resolved"
    record = ActionRecord(ActionName.KILL_PROBE, "p", HUNG, ActionResult.failed("still there", (8,)), False)
    action = action_taken(record).journal_fields(0)
    assert action["KVMWD_PROBE_DIR"] == "/d/qmp-abcdef", "the dir of the finding it acted on"
    assert (action["KVMWD_RESULT"], action["PRIORITY"], action["KVMWD_DRY_RUN"], action["KVMWD_PIDS"]) == (
        "failed",
        "3",
        "false",
        "8",
    )


class FlakyStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.full = False

    def write(self, text: str) -> int:
        if self.full:
            raise OSError(28, "No space left on device")
        return super().write(text)


def test_when_the_journal_refuses_events_go_to_stderr_and_back_to_the_journal_when_it_returns() -> None:
    journal: List[Dict[str, str]] = []
    down = [True]

    def send(**fields: str) -> None:
        if down[0]:
            raise ConnectionRefusedError(111, "Connection refused")
        journal.append(fields)

    stream = io.StringIO()
    sink = EventSink(EventsTo.JOURNAL, send, stream=stream)
    sink.emit(lifecycle("started", "one"))
    down[0] = False
    sink.emit(lifecycle("stopped", "two"))
    [line] = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert line["MESSAGE"] == "one" and "Connection refused" in line["KVMWD_JOURNAL_ERROR"]
    assert [e["MESSAGE"] for e in journal] == ["two"]


def test_an_event_neither_journal_nor_stderr_takes_is_kept_and_delivered_in_order_later() -> None:
    stream = FlakyStream()
    sink = EventSink(EventsTo.STDERR, None, stream=stream)
    stream.full = True
    sink.emit(lifecycle("started", "one"))
    sink.emit(lifecycle("config_reloaded", "two"))
    assert stream.getvalue() == "" and len(sink.pending) == 2
    stream.full = False
    sink.emit(lifecycle("stopped", "three"))
    assert [json.loads(x)["MESSAGE"] for x in stream.getvalue().splitlines()] == ["one", "two", "three"]
    assert not sink.pending


def test_auto_uses_the_journal_only_where_its_socket_exists(tmp_path: Path) -> None:
    sent: List[Dict[str, str]] = []
    stream = io.StringIO()
    sink = EventSink(EventsTo.AUTO, lambda **f: sent.append(f), stream=stream, socket_path=str(tmp_path / "socket"))
    sink.emit(lifecycle("started", "no socket"))
    (tmp_path / "socket").touch()
    sink.emit(lifecycle("stopped", "socket"))
    assert [e["MESSAGE"] for e in sent] == ["socket"]
    assert json.loads(stream.getvalue())["MESSAGE"] == "no socket"
