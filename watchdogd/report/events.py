"""Report: every finding that opens or resolves, every action, and the daemon's life, as journal events.

One event type, one MESSAGE_ID, one entry in systemd/kvm-watchdog.catalog (so
`journalctl -x` explains it). Events go through a callable shaped like
systemd-python's `journal.send`; when there is no journal socket, or journald is
down, the same fields go to stderr as one JSON object a line, and the journal is
tried again on the next event, so events resume as soon as journald is back.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, Mapping, Optional, Sequence, TextIO, cast

from .. import __version__
from ..act.actions import ActionRecord
from ..config import Config, EventsTo, LimitsConfig
from ..decide.condition import Condition
from ..kinds import Kind, Severity
from ..model import Finding
from ..printable import printable
from ..timefmt import iso_utc
from ..typing_compat import Protocol

IDENTIFIER = "kvm-watchdog"
JOURNAL_SOCKET = "/run/systemd/journal/socket"

# KVMWD_EVENT -> MESSAGE_ID. Fixed forever: operators and their tooling match on them.
MESSAGE_IDS: Dict[str, str] = {
    Kind.PROBE_HUNG: "0e01d9f831ac40549a3cbaeac1ed4ee2",
    Kind.PROBE_DEFUNCT: "acb13dae1024484d83a24055edca0c35",
    Kind.PROBE_DIR_STALE: "08c23965df0f47f2bfb642d1d2bb8df7",
    Kind.DOMCAPS_SLOW: "2d25e5503daf4b45b64f9ea1bce83981",
    Kind.DOMCAPS_HUNG: "c689a4f8decb4d22830f6f02fc028e00",
    Kind.DOMCAPS_FAILED: "2488d6733fea43ef9eb74178ea018baf",
    Kind.LIBVIRT_UNREACHABLE: "d6291be3cb254247930740f8157b8285",
    Kind.CACHE_EMPTY: "2cfb8ac3ae8a4deda3d6d14592a169b8",
    Kind.KERNEL_CHANGED: "16da003ad786406baba99a2238bdb070",
    "action": "1b0ff9497e7e44dbbc3fdad1d7bc0197",
    "started": "33cba9a7a05944fca04fe610b3491c6a",
    "stopped": "0ec09c0b93424c43b5001c541856f556",
    "config_reloaded": "031a3e06647c4be2bccfae1b3c426716",
    "config_error": "02637c4a630c4ae19fc0fddbe8438c07",
    "remediation_paused": "dec0a327ed0245269af5efbf56220ce5",
    "remediation_resumed": "efd5f58fb17e486381df30ab698d89db",
    # beyond the contract's list: something could not be read or saved (reported once)
    "scan_problem": "5b8f1f0e6d2a4f7e9c3a1d2b4e6f8a0c",
    Kind.PROBE_DIR_MISSING: "37c4e87088fe43858a1c93489824d07c",
    Kind.PROBE_DIRS_FLOOD: "5139c1e160cb47c5902738e263a13b38",
    Kind.VM_START_FAILED: "74452283f0454fb18c101fc9e3c5cbef",
    Kind.KVM_UNUSABLE: "ca5d8aaef9d34463994cb0c086c92017",
    Kind.PROBE_FAILED: "e7f54537a4b04e34833ab9236ae1375d",
    "hook": "a5001eb2855448b6ba32bdf5e4af3a27",  # an operator's hook ran (its result: ok, failed, timeout)
    # the host condition (decide/condition.py): open and resolved
    "vm_starts_blocked": "87e6d77a7bd04ea2bbb283b7f7b337f1",
}

# syslog priorities
CRIT, ERR, WARNING, NOTICE, INFO = 2, 3, 4, 5, 6
_OPEN_PRIORITY = {Severity.CRITICAL: CRIT, Severity.WARNING: WARNING, Severity.INFO: INFO}
_ACTION_PRIORITY = {"ok": NOTICE, "dry_run": NOTICE, "skipped": WARNING, "failed": ERR}


@dataclass(frozen=True)
class Event:
    kind: str  # KVMWD_EVENT
    message: str
    priority: int
    fields: Dict[str, str] = field(default_factory=dict)  # KVMWD_* beyond the common ones

    def journal_fields(self, wall: float) -> Dict[str, str]:
        out = {
            "MESSAGE": self.message,
            "PRIORITY": str(self.priority),
            "MESSAGE_ID": MESSAGE_IDS[self.kind],
            "SYSLOG_IDENTIFIER": IDENTIFIER,
            "KVMWD_EVENT": self.kind,
            "KVMWD_TIME": iso_utc(wall),
        }
        out.update(self.fields)
        # a guest's log line, a log file's name or a process name may sit in any of them:
        # no control character reaches the journal, journalctl's terminal or the stderr line
        return {k: printable(v) for k, v in out.items()}


def _finding_fields(finding: Finding, state: str) -> Dict[str, str]:
    ev = finding.evidence
    probe_dir, pids, age, latency = ev.probe_path(), ev.pid_list(), ev.age(), ev.latency()
    out = {
        "KVMWD_STATE": state,
        "KVMWD_SEVERITY": finding.severity.label,
        "KVMWD_SUBJECT": finding.subject,
        "KVMWD_SINCE": iso_utc(finding.since),
    }
    if probe_dir:
        out["KVMWD_PROBE_DIR"] = probe_dir
    if pids:
        out["KVMWD_PIDS"] = ",".join(map(str, pids))
    if age is not None:
        out["KVMWD_AGE_S"] = str(age)
    if latency is not None:
        out["KVMWD_LATENCY_MS"] = str(latency)
    out["KVMWD_EVIDENCE"] = json.dumps(finding.evidence_json(), sort_keys=True)
    return out


def finding_opened(finding: Finding) -> Event:
    return Event(finding.kind, finding.message, _OPEN_PRIORITY[finding.severity], _finding_fields(finding, "open"))


def finding_resolved(finding: Finding, open_for_s: float) -> Event:
    fields = _finding_fields(finding, "resolved")
    fields["KVMWD_OPEN_FOR_S"] = f"{open_for_s:.1f}"
    message = f"Resolved after {open_for_s:.0f}s: {finding.kind} on {finding.subject} is no longer seen."
    return Event(finding.kind, message, NOTICE, fields)


def action_taken(record: ActionRecord) -> Event:
    fields = {
        "KVMWD_ACTION": record.action,
        "KVMWD_POLICY": record.policy,
        "KVMWD_RESULT": record.result,
        "KVMWD_DRY_RUN": "true" if record.dry_run else "false",
        "KVMWD_FINDING": record.kind,
        "KVMWD_SUBJECT": record.subject,
        "KVMWD_DETAIL": record.detail,
    }
    probe_dir = record.finding.evidence.probe_path()
    if probe_dir:
        fields["KVMWD_PROBE_DIR"] = probe_dir
    if record.pids:
        fields["KVMWD_PIDS"] = ",".join(map(str, record.pids))
    message = f"{record.action} on {record.subject} (policy {record.policy}, for {record.kind}): {record.result}"
    if record.detail:
        message += f": {record.detail}"
    return Event("action", message, _ACTION_PRIORITY.get(record.result, NOTICE), fields)


def lifecycle(kind: str, message: str, priority: int = INFO, **fields: str) -> Event:
    """started, stopped, config_reloaded, config_error, remediation_paused/resumed."""
    return Event(kind, message, priority, {f"KVMWD_{k.upper()}": v for k, v in fields.items()})


def _noted(config: Config) -> str:
    """The config's notes (what its load accepted but an operator should know), as sentences for a message."""
    return "".join(f" Note: {note}." for note in config.notes)


def started(config: Config, watch_how: str) -> Event:
    """The daemon's first event: what it watches, how, and from which config."""
    return lifecycle(
        "started",
        f"kvm-watchdog {__version__} started: full scan every {config.interval:g}s, "
        f"probe deadlines at {config.detect.probe_hung_after:g}s, {watch_how}; "
        f"config {config.source or 'built-in defaults'}.{_noted(config)}",
        config=config.source or "",
        notes="\n".join(config.notes),
        version=__version__,
        watch=watch_how,
    )


def stopped(cut_short: bool) -> Event:
    """The daemon's last event; a warning when an action batch was still running at the stop."""
    if cut_short:
        return lifecycle("stopped", "kvm-watchdog stopped. An action was still running and was cut short.", WARNING)
    return lifecycle("stopped", "kvm-watchdog stopped.", NOTICE)


def config_reloaded(config: Config) -> Event:
    return lifecycle(
        "config_reloaded",
        f"Config reloaded from {config.source or 'built-in defaults'}.{_noted(config)}",
        NOTICE,
        config=config.source or "",
    )


def config_error(path: str, problems: Sequence[str]) -> Event:
    """A reload refused: the running config is kept."""
    message = f"The new config {path} was not loaded, the running one is kept: {'; '.join(problems)}"
    return lifecycle("config_error", message, ERR, config=path, problems="\n".join(problems))


def remediation_paused(limits: LimitsConfig) -> Event:
    return lifecycle(
        "remediation_paused",
        f"Remediation paused: {limits.actions} actions within {limits.per:g}s (limits). Findings are still reported; "
        "actions resume when the window has room again. Something keeps breaking: look at the host.",
        WARNING,
    )


def condition_changed(condition: Condition) -> Event:
    """vm_starts_blocked opened (with why) or resolved: what a scheduler hook is told."""
    if condition.blocked:
        why = "; ".join(f"{r.kind} {r.subject}" for r in condition.reasons)
        message = f"VM starts are blocked on this host: {why}. The scheduler should send VMs elsewhere."
        priority = CRIT
    else:
        message = "VM starts are no longer blocked on this host: the scheduler may send VMs here again."
        priority = NOTICE
    return lifecycle(
        "vm_starts_blocked",
        message,
        priority,
        state="open" if condition.blocked else "resolved",
        reasons=json.dumps([r.to_json() for r in condition.reasons], sort_keys=True),
    )


def remediation_resumed() -> Event:
    return lifecycle("remediation_resumed", "Remediation resumed: the limits window has room again.", NOTICE)


class Sender(Protocol):
    """The event seam, shaped like systemd-python's journal.send: fields in, OSError when the journal is gone."""

    def __call__(self, **fields: str) -> object: ...


def journal_sender() -> Optional[Sender]:
    """systemd-python's journal.send, or None where the module is missing."""
    try:
        from systemd import journal  # type: ignore[attr-defined]
    except ImportError:
        return None
    send = cast(Sender, journal.send)  # untyped C extension: the Protocol says what we rely on
    return send


class EventSink:
    """Delivers events: journal when it can, stderr JSON when it cannot; never raises.

    mode: the config's `events` (auto: the journal when its socket exists). An event
    that neither the journal nor stderr takes is kept (up to `backlog` of them) and
    delivered first next time, so a full disk or a restarting journald loses nothing
    short of that bound, and the count of what was dropped past it is reported.
    """

    def __init__(
        self,
        mode: EventsTo,
        send: Optional[Sender],
        stream: TextIO = sys.stderr,
        socket_path: str = JOURNAL_SOCKET,
        echo: Optional[TextIO] = None,
        backlog: int = 10000,
    ):
        self.mode = mode
        self.send = send
        self.stream = stream
        self.socket_path = socket_path
        self.echo = echo
        self.clock: Callable[[], float] = time.time
        self.pending: Deque[Dict[str, str]] = collections.deque(maxlen=backlog)
        self.dropped = 0
        self.journal_error: Optional[str] = None  # why the last journal send failed, while it fails
        self.sent = collections.Counter()  # type: collections.Counter[str]
        # told every event with its journal fields, after delivery (the hooks' runner)
        self.listeners: List[Callable[[Event, Dict[str, str]], None]] = []
        self._lock = threading.Lock()

    def _journal_wanted(self) -> bool:
        if self.send is None or self.mode is EventsTo.STDERR:
            return False
        return self.mode is EventsTo.JOURNAL or os.path.exists(self.socket_path)

    def emit(self, event: Event) -> None:
        """Deliver one event (the loop and the hook workers both emit: one at a time), then hand it to the
        listeners (the hooks), which must not block."""
        with self._lock:
            fields = self._emit(event)
        for listener in list(self.listeners):
            listener(event, fields)

    def counts(self) -> Dict[str, int]:
        """Events sent so far, by kind (a hook's thread may be emitting meanwhile)."""
        with self._lock:
            return dict(self.sent)

    def _emit(self, event: Event) -> Dict[str, str]:
        fields = event.journal_fields(self.clock())
        self.sent[event.kind] += 1
        if self.echo is not None:
            self._echo(fields)
        while self.pending:
            if not self._deliver(self.pending[0]):
                break
            self.pending.popleft()
        if self.pending or not self._deliver(fields):
            if len(self.pending) == self.pending.maxlen:
                self.dropped += 1
            self.pending.append(fields)
        return fields

    def _deliver(self, fields: Mapping[str, str]) -> bool:
        if self._journal_wanted():
            assert self.send is not None
            try:
                self.send(**fields)
                self.journal_error = None
                return True
            except OSError as exc:
                self.journal_error = f"journal send failed: {exc.strerror or exc}"
        return self._to_stream(fields)

    def _to_stream(self, fields: Mapping[str, str]) -> bool:
        line = dict(fields)
        if self.journal_error and self.mode is not EventsTo.STDERR:
            line["KVMWD_JOURNAL_ERROR"] = self.journal_error
        if self.dropped:
            line["KVMWD_EVENTS_DROPPED"] = str(self.dropped)
        try:
            self.stream.write(json.dumps(line, sort_keys=True) + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # ENOSPC, EPIPE, a closed stream
            return False
        return True

    def _echo(self, fields: Mapping[str, str]) -> None:
        """A readable line for a person watching `kvm-watchdog run --verbose` in a terminal."""
        label = {CRIT: "CRIT", ERR: "ERROR", WARNING: "WARN", NOTICE: "NOTE", INFO: "INFO"}.get(
            int(fields["PRIORITY"]), "INFO"
        )
        state = fields.get("KVMWD_STATE") or fields.get("KVMWD_RESULT") or ""
        what = fields["KVMWD_EVENT"] + (f"/{state}" if state else "")
        try:
            assert self.echo is not None
            self.echo.write(
                f"{time.strftime('%H:%M:%S', time.localtime(self.clock()))} {label:5} {what:24} {fields['MESSAGE']}\n"
            )
            self.echo.flush()
        except (OSError, ValueError):
            pass
