"""`kvm-watchdog run`: the loop. Deadline-driven, single-threaded but for two action lanes (a worker each).

The loop sleeps in one select() until the earliest of: the next full scan
(`interval`), a probe's own deadline (the moment it turns `probe_hung_after` or
`stale_dir_after` old), a probe dir appearing or going (inotify), a domain's QEMU
log growing (inotify: its new lines are read at once, and a start-up failure found
there asks for a scan), the latency child answering or running out of time, an
action batch ending, a signal, or the next WATCHDOG=1 ping. So a hung probe is
reported at its deadline and a failed VM start within a second, whatever
`interval` is, and an idle host costs one scan per interval.

Every scan goes observe -> assess -> ledger (open/resolved events, once each) ->
decide -> the action lanes; the loop itself never blocks on an action, and the
WATCHDOG=1 pings are sent from the loop, so they stop if the loop ever sticks.

Two action lanes, one worker each: actions on proven findings, and actions on
evidence the qemu user could have made (docs/THREAT-MODEL.md). A flood of forged
probes that ignore SIGTERM keeps only its own lane busy; a genuine hung probe is
still killed at its deadline. Rescans that a probe dir's coming or going asks
for are at least RESCAN_GAP apart, so a mkdir/rmdir loop costs a bounded number
of scans. status.json is written when what it says changes; the per-scan figures
(time, count, STATUS line) go to a small scan.json, which `status` reads beside it.
"""

from __future__ import annotations

import collections
import os
import select
import signal
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Set

from .. import __version__
from ..act.actions import ActionRecord
from ..config import Config, ConfigError
from ..decide.ledger import FindingLedger
from ..decide.policy import BOTH_LANES, BreakerChange
from ..fsafe import try_flock
from ..model import Finding, LatencyResult, Observation, problem_id
from ..observe.watch import DirWatch
from ..report.events import ERR, NOTICE, WARNING, EventSink, action_taken, finding_opened, finding_resolved, lifecycle
from ..report.figures import Figures, Outlet, Snapshot, probe_states
from ..report.notify import Notifier
from ..report.status import SCAN_FILE, STATUS_FILE, DaemonView, scan_document, status_line
from ..rules import deadlines
from ..state import StateError
from ..timefmt import iso_utc
from .pipeline import Pipeline
from .preflight import load_config
from .runner import ActionRunner, Waker

STOP_GRACE = 4.0  # seconds a running action batch gets to finish on SIGTERM (systemd allows 5 here)
RECENT_ACTIONS = 50
RESCAN_GAP = 0.6  # seconds between two scans that a probe dir event asks for (churn costs under 2 a second)
LOG_READ_GAP = 0.25  # seconds between two reads of the QEMU logs that their growing asks for (a chatty guest costs 4 a second)


@dataclass(frozen=True)
class ConfigSource:
    """Where the config comes from, so SIGHUP reads the same place again."""

    path: str
    required: bool

    def load(self) -> Config:
        return load_config(self.path, self.required)


class AlreadyRunning(Exception):
    """Another `kvm-watchdog run` uses this state dir; two would act on the same probes."""


def hold_run_lock(state_dir: str) -> int:
    """An flock on state_dir/run.lock for the daemon's lifetime (released when it exits)."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    path = os.path.join(state_dir, "run.lock")
    fd = try_flock(path)
    if fd is None:
        with open(path, "rb") as f:
            holder = f.read(32).decode("ascii", "replace").strip() or "?"
        raise AlreadyRunning(f"another kvm-watchdog run (pid {holder}) is using {state_dir}")
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _noted(config: Config) -> str:
    """The config's notes (what its load accepted but an operator should know), as sentences for a message."""
    return "".join(f" Note: {note}." for note in config.notes)


@dataclass
class Wiring:
    """The daemon's long-lived collaborators, made once by the composition root (service.app.build_daemon)."""

    sink: EventSink
    notifier: Notifier
    waker: Waker
    lanes: Dict[bool, ActionRunner]  # True: proven findings, False: the rest
    watch: DirWatch
    ledger: FindingLedger  # read back from the previous daemon's status
    recent: Sequence[Dict[str, Any]]
    builder: Callable[[Config], Pipeline]  # the per-config parts, again on every reload
    watch_for: Callable[[Config], DirWatch]
    figures: Figures  # counted whatever the config; exported where an outlet is on
    outlet: Outlet
    outlet_for: Callable[[Config], Outlet]


class Daemon:
    """The loop. Every collaborator comes in through `wiring`; the constructor does no I/O."""

    def __init__(
        self,
        source: ConfigSource,
        parts: Pipeline,
        wiring: Wiring,
        mono: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        self.source = source
        self.parts = parts
        self.sink = wiring.sink
        self.notifier = wiring.notifier
        self.waker = wiring.waker
        self.lanes = wiring.lanes
        self.watch = wiring.watch
        self.builder = wiring.builder
        self.watch_for = wiring.watch_for
        self.figures = wiring.figures
        self.outlet = wiring.outlet
        self.outlet_for = wiring.outlet_for
        self.snapshot: Optional[Snapshot] = None
        self.mono = mono
        self.wall = wall
        self.ledger = wiring.ledger
        self.recent: Deque[Dict[str, Any]] = collections.deque(wiring.recent, maxlen=RECENT_ACTIONS)
        self._saved_handlers: Dict[int, Any] = {}
        self._stop = False
        self._reload = False
        self._scan_now = True
        self._logs_due = False
        self._next_log_read = 0.0
        self._ready = False
        self.started_wall = wall()
        self.next_scan = 0.0
        self.next_latency = mono()  # the first latency probe goes out at once
        self.next_ping = mono()
        self.deadlines: List[float] = []
        self.latency: Optional[LatencyResult] = None
        self.latency_is_new = False
        self.obs: Optional[Observation] = None
        self.findings: List[Finding] = []
        self.problems_seen: Set[str] = set()
        self.scans = 0
        self.last_scan_mono: Optional[float] = None
        self._status_saved: Optional[Dict[str, Any]] = None  # what status.json holds now, when we wrote it

    @property
    def config(self) -> Config:
        return self.parts.config

    # ---- signals: handlers only set flags; the wake pipe gets select() to return -----------
    def install_signal_handlers(self) -> None:
        """Main thread only. Undone by shutdown()."""
        signal.set_wakeup_fd(self.waker.w, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self._saved_handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        if self._saved_handlers:
            signal.set_wakeup_fd(-1)
            for sig, handler in self._saved_handlers.items():
                signal.signal(sig, handler)
            self._saved_handlers.clear()

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        if signum == signal.SIGHUP:
            self._reload = True
        else:
            self._stop = True

    def request_stop(self) -> None:
        """Stop from another thread (tests, embedding); the same path as SIGTERM."""
        self._stop = True
        self.waker.wake()

    # ---- the loop --------------------------------------------------------------------------
    def run(self) -> int:
        watch_how = self.watch.why_polling or "inotify on " + ", ".join(self.config.libvirt.probe_dirs)
        if self.watch.watching_logs:
            watch_how += f" and the QEMU logs in {self.config.libvirt.log_dir}"
        self.sink.emit(
            lifecycle(
                "started",
                f"kvm-watchdog {__version__} started: full scan every {self.config.interval:g}s, "
                f"probe deadlines at {self.config.detect.probe_hung_after:g}s, {watch_how}; "
                f"config {self.config.source or 'built-in defaults'}.{_noted(self.config)}",
                config=self.config.source or "",
                notes="\n".join(self.config.notes),
                version=__version__,
                watch=watch_how,
            )
        )
        problem = self.outlet.start()
        if problem:
            self._report_problems([problem])
        try:
            while not self._stop:
                try:
                    self.step()
                except Exception as exc:  # a bug or an unforeseen host state must not end the watchdog
                    self._report_problems([f"internal error: {type(exc).__name__}: {exc}"])
                    self._scan_now = False
                    self.deadlines = []  # no tight loop: the next try is a whole interval away
                    self.next_scan = self.mono() + self.config.interval
                    self._ping(self.mono())
        finally:
            self.shutdown()
        return 0

    def step(self) -> None:
        """One turn: wait for the earliest thing due, then handle whatever is ready."""
        readable = self._wait(self._timeout())
        now = self.mono()
        if self.waker.fileno() in readable:
            self.waker.drain()
        if self._stop:
            return
        if self._reload and not self.busy:
            self._reload = False
            self.reload()
        if self.watch.poll_interval is not None or self.watch.fileno() in readable:
            changes = self.watch.changed()
            self._scan_now = self._scan_now or changes.probes
            self._logs_due = self._logs_due or changes.logs
        self._read_logs(now)
        self._service_latency(now)
        for lane in self.lanes.values():
            outcome = lane.take()
            if outcome is not None:
                self._after_actions(*outcome)
        now = self.mono()
        if (self._scan_now and self._rescan_due(now)) or now >= self.next_scan or (self.deadlines and now >= self.deadlines[0]):
            self.scan()
        self._ping(self.mono())

    def _read_logs(self, now: float) -> None:
        """The domains' logs grew: read them now (at most every LOG_READ_GAP); a start-up failure found asks for a scan."""
        diagnostician = self.parts.diagnostician
        if not self._logs_due or now < self._next_log_read or diagnostician is None:
            return
        self._logs_due = False
        self._next_log_read = now + LOG_READ_GAP
        if diagnostician.follow_logs(self.wall()):
            self._scan_now = True

    @property
    def busy(self) -> bool:
        return any(lane.busy for lane in self.lanes.values())

    def _rescan_due(self, now: float) -> bool:
        """May a rescan that a probe dir event asked for run now (RESCAN_GAP after the last scan)?"""
        if self.last_scan_mono is None:
            return True
        return now - self.last_scan_mono >= RESCAN_GAP

    def _timeout(self) -> float:
        if self._stop or self._reload:
            return 0.0
        due = [self.next_scan]
        if self._scan_now:
            due.append(self.last_scan_mono + RESCAN_GAP if self.last_scan_mono is not None else 0.0)
        if self.deadlines:
            due.append(self.deadlines[0])
        if self._logs_due:
            due.append(self._next_log_read)
        if self.notifier.watchdog_interval:
            due.append(self.next_ping)
        lat = self.parts.latency
        if lat is not None:
            due.append(lat.deadline if lat.in_flight and lat.deadline is not None else self.next_latency)
        if self.watch.poll_interval is not None:
            due.append(self.mono() + self.watch.poll_interval)
        return max(0.0, min(due) - self.mono())

    def _wait(self, timeout: float) -> Set[int]:
        fds = [self.waker.fileno()]
        for fd in (self.watch.fileno(), self.parts.latency.fileno() if self.parts.latency else None):
            if fd is not None:
                fds.append(fd)
        ready, _, _ = select.select(fds, [], [], timeout)
        return set(ready)

    def _ping(self, now: float) -> None:
        interval = self.notifier.watchdog_interval
        if interval and now >= self.next_ping:
            self.notifier.watchdog()
            self.next_ping = now + interval

    # ---- latency: one child at a time, polled from the loop --------------------------------
    def _service_latency(self, now: float) -> None:
        probe = self.parts.latency
        if probe is None:
            return
        if probe.in_flight:
            result = probe.poll()
            if result is not None:
                self.figures.latency(result, self.config.latency.timeout)
                self.latency = result
                self.latency_is_new = True
                self._scan_now = True
            return
        idle = self.parts.may_connect(self.obs)  # asked every turn: the STATUS line says idle as soon as it is
        if idle is not None:  # never wake libvirt, never keep an idle one from exiting
            if self.latency is None or self.latency.skipped != idle:
                self.latency, self.latency_is_new = LatencyResult(reachable=None, answered=False, skipped=idle), False
            self.next_latency = max(self.next_latency, now + min(self.config.latency.every, self.config.interval))  # ask again then, not before
            return
        if now >= self.next_latency:
            if self.latency is not None and self.latency.skipped:
                self.latency = None  # a call goes out: "libvirt idle" is no longer true (the answer comes with the child)
            skipped = probe.start()
            self.next_latency = now + (self.config.latency.every if skipped is None else min(self.config.latency.every, self.config.interval))

    # ---- one scan: observe, assess, report changes, decide -----------------------------------
    def scan(self) -> None:
        self._scan_now = False
        taken = self.mono()
        self.last_scan_mono = taken
        obs, findings = self.parts.look(self.latency)
        self.obs = obs
        self.scans += 1
        held = frozenset().union(*(lane.subjects for lane in self.lanes.values()))
        grace = self.config.detect.grace
        change = self.ledger.update(findings, obs.taken_wall, hold=held, grace=grace)
        findings = [f for f in findings if f.key in self.ledger.open]  # a finding still in its grace is not acted on, nor shown
        self.findings = findings
        self.figures.opened(change.opened)
        for f in change.opened:
            self.sink.emit(finding_opened(f))
        for f, open_for in change.resolved:
            self.sink.emit(finding_resolved(f, open_for))
        problems = list(obs.errors)
        free = frozenset(lane for lane in BOTH_LANES if not self.lanes[lane].busy)
        if True in free and self.parts.engine.breaker_transition(obs.taken_wall, wanted_more=False) == "resumed":
            self.sink.emit(lifecycle("remediation_resumed", "Remediation resumed: the limits window has room again.", NOTICE))
        planned = self.parts.plan(findings, obs.taken_wall, lanes=free) if free else []
        for lane in free:
            batch = [p for p in planned if p.proven == lane]
            if batch:
                self.lanes[lane].submit(self.parts.actor, batch)
        problems += self.parts.keep_incidents()  # after the kill is on its way: dpkg is slow
        if free and not planned and (change.opened or change.resolved or self.latency_is_new):
            problems += self._save_progress(obs)
        wall_due = [*self.ledger.due(grace), *(self.parts.diagnostician.due() if self.parts.diagnostician is not None else ())]
        self.deadlines = sorted(
            [d for d in deadlines(obs, self.config.detect, taken) if d > taken] + [taken + max(0.0, t - obs.taken_wall) + 0.01 for t in wall_due]
        )
        self.next_scan = taken + self.config.interval
        line = status_line(findings, obs, self.parts.engine.state.paused)
        unsaved = self._write_status(obs, problems, line)
        unsaved += self.outlet.publish(self._snapshot(obs, findings, self.mono() - taken))
        self._report_problems(problems + unsaved, replace=True)
        if not self._ready:
            self._ready = True
            self.notifier.ready(line)
        else:
            self.notifier.status(line)
        self.watch.refresh()

    def _snapshot(self, obs: Observation, findings: Sequence[Finding], seconds: float) -> Snapshot:
        self.snapshot = Snapshot(
            findings=tuple(findings),
            probes=probe_states(obs, self.config.detect),
            paused=self.parts.engine.state.paused,
            cache_entries=len(obs.cache_entries) if obs.cache_entries is not None else None,
            kernel_release=obs.kernel_release,
            kernel_last_good=obs.kernel_last_good or "",
            last_scan=obs.taken_wall,
            scan_seconds=seconds,
            interval=self.config.interval,
        )
        return self.snapshot

    def _save_progress(self, obs: Observation) -> List[str]:
        self.latency_is_new = False
        return self.parts.save_progress(obs)

    def _after_actions(self, records: Sequence[ActionRecord], breaker: Optional[BreakerChange]) -> None:
        for record in records:
            self.figures.acted(record.action, record.result)
            probe_dir = self._probe_dir_of(record)
            self.sink.emit(action_taken(record, probe_dir))
            entry = dict(record.to_json(), at=record.at, at_utc=iso_utc(record.at))
            self.recent.append(entry)
        if breaker == "paused":
            limits = self.config.limits
            self.sink.emit(
                lifecycle(
                    "remediation_paused",
                    f"Remediation paused: {limits.actions} actions within {limits.per:g}s (limits). Findings are still reported; "
                    "actions resume when the window has room again. Something keeps breaking: look at the host.",
                    WARNING,
                )
            )
        if self.obs is not None:
            self._report_problems(self._save_progress(self.obs))
        self._scan_now = True
        if any(r.changed_something for r in records):
            self.next_latency = self.mono()  # see at once whether libvirt answers again

    def _probe_dir_of(self, record: ActionRecord) -> Optional[str]:
        held = self.ledger.open.get((record.kind, record.subject))  # held open while it was acted on
        value = held.finding.evidence.get("probe_dir") if held else None
        return str(value) if value else None

    def _report_problems(self, problems: Sequence[str], replace: bool = False) -> None:
        """Each new problem once (an unreadable dir is reported when it starts, not every scan).

        replace: these are all the problems of a whole scan; one that is gone may be
        reported again if it comes back.
        """
        current = {problem_id(p): p for p in problems}
        for key in sorted(set(current) - self.problems_seen):
            text = current[key]
            self.sink.emit(lifecycle("scan_problem", f"Could not see or save everything: {text}. The watchdog goes on.", WARNING, problem=str(text)))
        self.problems_seen = set(current) if replace else self.problems_seen | set(current)

    def _write_status(self, obs: Observation, problems: Sequence[str], line: str, stopped: bool = False) -> List[str]:
        """Save what `status` shows: status.json when it changed, scan.json every scan; the problems, if any."""
        status = DaemonView(
            started_at=self.started_wall,
            config=self.config.source,
            interval=self.config.interval,
            paused=self.parts.engine.state.paused,
            ledger=self.ledger,
            recent_actions=list(self.recent),
            errors=list(problems),
            events_sent=dict(self.sink.sent),
            stopped_at=self.wall() if stopped else None,
        ).document()
        out: List[str] = []
        if status != self._status_saved:
            try:
                self.parts.state.write_json(STATUS_FILE, status)
                self._status_saved = status
            except StateError as exc:
                self._status_saved = None
                out.append(exc.problem())
        try:
            self.parts.state.write_json(SCAN_FILE, scan_document(obs, self.scans, line), durable=False)
        except StateError as exc:
            out.append(exc.problem())
        return out

    # ---- reload and stop ---------------------------------------------------------------
    def reload(self) -> None:
        self.notifier.reloading()
        try:
            config = self.source.load()
        except ConfigError as exc:
            problems = [str(p) for p in exc.problems]
            self.sink.emit(
                lifecycle(
                    "config_error",
                    f"The new config {self.source.path} was not loaded, the running one is kept: {'; '.join(problems)}",
                    ERR,
                    config=self.source.path,
                    problems="\n".join(problems),
                )
            )
            self.notifier.ready(f"config error, running on the previous config | {self.notifier_line()}")
            return
        old = self.parts
        if old.latency is not None:
            old.latency.cancel()
        parts = self.builder(config)
        parts.carry_over(old)  # counters, the breaker, what the scan and the diagnosis remember, the logs' offsets
        self.parts = parts
        self.watch.close()
        self.watch = self.watch_for(config)
        if config.metrics != self.outlet.config:  # the same counters, new outlets
            self.outlet.stop(None)
            self.outlet = self.outlet_for(config)
            problem = self.outlet.start()
            if problem:
                self._report_problems([problem])
        self.sink.mode = config.events
        self.next_latency = self.mono()
        message = f"Config reloaded from {config.source or 'built-in defaults'}.{_noted(config)}"
        self.sink.emit(lifecycle("config_reloaded", message, NOTICE, config=config.source or ""))
        self.scan()
        self.notifier.ready(self.notifier_line())

    def notifier_line(self) -> str:
        if self.obs is None:
            return "starting"
        return status_line(self.findings, self.obs, self.parts.engine.state.paused)

    def shutdown(self) -> None:
        """A clean stop: no child left behind, the status saved, a stopped event."""
        self.notifier.stopping()
        self.parts.cancel.set()
        end = self.mono() + STOP_GRACE
        unfinished = not all([lane.wait(max(0.0, end - self.mono())) for lane in self.lanes.values()])
        if not unfinished:
            for lane in self.lanes.values():
                outcome = lane.take()
                if outcome is not None:
                    self._after_actions(*outcome)
        if self.parts.latency is not None:
            self.parts.latency.cancel()
        self.watch.close()
        if self.obs is not None:
            self._write_status(self.obs, [], self.notifier_line(), stopped=True)
        self.outlet.stop(self.snapshot)
        note = " An action was still running and was cut short." if unfinished else ""
        self.sink.emit(lifecycle("stopped", f"kvm-watchdog stopped.{note}", NOTICE if not unfinished else WARNING))
        self._restore_signal_handlers()
        self.notifier.close()
        if not unfinished:
            self.waker.close()  # a lane still running would write to it
