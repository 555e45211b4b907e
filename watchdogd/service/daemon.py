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
for, and those a probe's or a zombie's deadline asks for, are at least RESCAN_GAP
apart, so a mkdir/rmdir loop or a stream of zombies costs a bounded number of
scans. Its helpers, each with one job: signals (flags), latency_schedule (the
latency lane), status_keeper (status.json, scan.json, each problem told once).
"""

from __future__ import annotations

import select
import time
from typing import Callable, List, Optional, Sequence, Set

from ..act.actions import ActionRecord
from ..config import Config, ConfigError
from ..decide.policy import BreakerChange, Lane, PlannedAction
from ..model import Finding, Observation
from ..problems import Problem
from ..report import events
from ..report.figures import Snapshot, snapshot_of
from ..report.text import status_line
from ..thresholds import deadlines
from .latency_schedule import LatencySchedule
from .outlets import ScanReport, outlets, tell
from .pipeline import Pipeline
from .preflight import ConfigSource
from .signals import SignalFlags
from .status_keeper import StatusKeeper
from .wiring import Wiring

STOP_GRACE = 4.0  # seconds a running action batch gets to finish on SIGTERM (systemd allows 5 here)
RESCAN_GAP = 0.6  # seconds between two scans that a probe dir event asks for (churn costs under 2 a second)
# seconds between two reads of the QEMU logs that their growing asks for (a chatty guest costs 4 a second)
LOG_READ_GAP = 0.25


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
        self.wiring = wiring  # every long-lived collaborator, read from here (a reload replaces its watch and outlet)
        self.mono = mono
        self.wall = wall
        self.signals = SignalFlags()
        self.status = StatusKeeper(wiring.sink, wiring.ledger, wiring.recent, wall(), wiring.condition)
        self.latency = LatencySchedule(first_at=mono())
        self.snapshot: Optional[Snapshot] = None
        self._scan_now = True
        self._logs_due = False
        self._next_log_read = 0.0
        self.next_scan = 0.0
        self.next_ping = mono()
        self.deadlines: List[float] = []
        self.obs: Optional[Observation] = None
        self.findings: List[Finding] = []
        self.scans = 0
        self.last_scan_mono: Optional[float] = None

    @property
    def config(self) -> Config:
        return self.parts.config

    def install_signal_handlers(self) -> None:
        """Main thread only: SIGTERM/SIGINT stop, SIGHUP reloads. Undone by shutdown()."""
        self.signals.install(self.wiring.waker.w)

    def request_stop(self) -> None:
        """Stop from another thread (tests, embedding); the same path as SIGTERM."""
        self.signals.stop = True
        self.wiring.waker.wake()

    # ---- the loop --------------------------------------------------------------------------
    def run(self) -> int:
        watch_how = self.wiring.watch.why_polling or "inotify on " + ", ".join(self.config.libvirt.probe_dirs)
        if self.wiring.watch.watching_logs:
            watch_how += f" and the QEMU logs in {self.config.libvirt.log_dir}"
        self.wiring.sink.emit(events.started(self.config, watch_how))
        problem = self.wiring.outlet.start()
        if problem:
            self.status.report([Problem(problem)])
        try:
            while not self.signals.stop:
                try:
                    self.step()
                except Exception as exc:  # a bug or an unforeseen host state must not end the watchdog
                    self.status.report([Problem(f"internal error: {type(exc).__name__}: {exc}")])
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
        if self.wiring.waker.fileno() in readable:
            self.wiring.waker.drain()
        if self.signals.stop:
            return
        if self.signals.reload and not self.busy:
            self.signals.reload = False
            self.reload()
        if self.wiring.watch.poll_interval is not None or self.wiring.watch.fileno() in readable:
            changes = self.wiring.watch.changed()
            self._scan_now = self._scan_now or changes.probes
            self._logs_due = self._logs_due or changes.logs
        self._read_logs(now)
        if self.parts.failures is not None and self.parts.failures.due(readable):
            self._scan_now = True  # libvirt logged a probe failure: told within a second
        if self.latency.service(now, self.parts, self.obs, self.wiring.figures):
            self._scan_now = True
        for lane in self.wiring.lanes.values():
            outcome = lane.take()
            if outcome is not None:
                self._after_actions(*outcome)
        now = self.mono()
        if (
            (self._scan_now and self._rescan_due(now))
            or now >= self.next_scan
            or (self.deadlines and now >= self.deadlines[0] and self._rescan_due(now))
        ):
            self.scan()
        self._ping(self.mono())

    def _read_logs(self, now: float) -> None:
        """The domains' logs grew: read them now (at most every LOG_READ_GAP); a start-up failure found asks for a
        scan."""
        if not self._logs_due or now < self._next_log_read:
            return
        self._logs_due = False
        self._next_log_read = now + LOG_READ_GAP
        if self.parts.follow_logs(self.wall()):
            self._scan_now = True

    @property
    def busy(self) -> bool:
        return any(lane.busy for lane in self.wiring.lanes.values())

    def _rescan_due(self, now: float) -> bool:
        """May a rescan that a probe dir event or a deadline asked for run now (RESCAN_GAP after the last scan)?"""
        if self.last_scan_mono is None:
            return True
        return now - self.last_scan_mono >= RESCAN_GAP

    def _timeout(self) -> float:
        if self.signals.stop or self.signals.reload:
            return 0.0
        due = [self.next_scan]
        if self._scan_now:
            due.append(self.last_scan_mono + RESCAN_GAP if self.last_scan_mono is not None else 0.0)
        if self.deadlines:  # deadlines are rate-limited as rescans are: anyone can make zombies and dirs
            gap = self.last_scan_mono + RESCAN_GAP if self.last_scan_mono is not None else 0.0
            due.append(max(self.deadlines[0], gap))
        if self._logs_due:
            due.append(self._next_log_read)
        if self.wiring.notifier.watchdog_interval:
            due.append(self.next_ping)
        latency_due = self.latency.due(self.parts)
        if latency_due is not None:
            due.append(latency_due)
        if self.wiring.watch.poll_interval is not None:
            due.append(self.mono() + self.wiring.watch.poll_interval)
        return max(0.0, min(due) - self.mono())

    def _wait(self, timeout: float) -> Set[int]:
        fds = [self.wiring.waker.fileno()]
        journal = self.parts.failures.fileno() if self.parts.failures else None
        for fd in (self.wiring.watch.fileno(), self.parts.latency.fileno() if self.parts.latency else None, journal):
            if fd is not None:
                fds.append(fd)
        ready, _, _ = select.select(fds, [], [], timeout)
        return set(ready)

    def _ping(self, now: float) -> None:
        interval = self.wiring.notifier.watchdog_interval
        if interval and now >= self.next_ping:
            self.wiring.notifier.watchdog()
            self.next_ping = now + interval

    # ---- one scan: observe, assess, decide, then tell each outlet -----------------------------
    def scan(self) -> None:
        self._scan_now = False
        taken = self.mono()
        self.last_scan_mono = taken
        obs, seen = self.parts.look(self.latency.result)
        self.obs = obs
        self.scans += 1
        held = frozenset().union(*(lane.subjects for lane in self.wiring.lanes.values()))
        grace = self.config.detect.grace
        change = self.wiring.ledger.update(seen, obs.taken_wall, hold=held, grace=grace)
        findings = list(change.open)  # a finding still in its grace is not acted on, nor shown
        self.findings = findings
        condition_changed = self.status.condition.update(findings, obs.taken_wall) is not None
        condition = self.status.condition.current
        problems = list(obs.errors)
        planned = self._remediate(findings, obs.taken_wall)
        problems += self.parts.keep_incidents()  # after the kill is on its way: dpkg is slow
        if planned is not None and not planned and (change.opened or change.resolved or self.latency.is_new):
            problems += self._save_progress(obs)
        self.deadlines = self._deadlines(obs, taken)
        self.next_scan = taken + self.config.interval
        paused = self.parts.engine.state.paused
        line = status_line(findings, obs, paused, condition)
        self.snapshot = snapshot_of(obs, findings, self.config, paused, self.mono() - taken, condition.blocked)
        report = ScanReport(
            obs, tuple(findings), change, condition, condition_changed, line, self.snapshot, self.scans, tuple(problems)
        )
        unsaved = tell(outlets(self.wiring, self.status, self.parts), report)
        self.status.report(problems + unsaved, replace=True)
        self.wiring.watch.refresh()

    def _remediate(self, findings: Sequence[Finding], now: float) -> Optional[List[PlannedAction]]:
        """Plan for the lanes that are free, and hand each its batch; None when no lane was free."""
        free = frozenset(lane for lane in Lane if not self.wiring.lanes[lane].busy)
        if Lane.PROVEN in free and self.parts.engine.breaker_transition(now, wanted_more=False) == "resumed":
            self.wiring.sink.emit(events.remediation_resumed())
        if not free:
            return None
        planned = self.parts.plan(findings, now, lanes=free)
        for lane in free:
            batch = [p for p in planned if p.lane is lane]
            if batch:
                self.wiring.lanes[lane].submit(self.parts.actor, batch)
        return planned

    def _deadlines(self, obs: Observation, taken: float) -> List[float]:
        """Monotonic times the loop wakes at besides its interval: a probe or zombie crossing a threshold, a
        finding's grace running out, the host condition settling, a VM start's failure expiring."""
        wall_due = [
            *self.wiring.ledger.due(self.config.detect.grace),
            *self.status.condition.due(),
            *(self.parts.diagnostician.vm_starts.due() if self.parts.diagnostician is not None else ()),
        ]
        return sorted(
            [d for d in deadlines(obs, self.config.detect, taken) if d > taken]
            + [taken + max(0.0, t - obs.taken_wall) + 0.01 for t in wall_due]
        )

    def _save_progress(self, obs: Observation) -> List[Problem]:
        self.latency.is_new = False
        return self.parts.save_progress(obs)

    def _after_actions(self, records: Sequence[ActionRecord], breaker: Optional[BreakerChange]) -> None:
        for record in records:
            self.wiring.figures.acted(record.action, record.result)
            self.wiring.sink.emit(events.action_taken(record))
            self.status.acted(record)
        self.parts.acted(records)
        if breaker == "paused":
            self.wiring.sink.emit(events.remediation_paused(self.config.limits))
        if self.obs is not None:
            self.status.report(self._save_progress(self.obs))
        self._scan_now = True
        if any(r.changed_something for r in records):
            self.latency.next_at = self.mono()  # see at once whether libvirt answers again

    # ---- reload and stop ---------------------------------------------------------------
    def reload(self) -> None:
        self.wiring.notifier.reloading()
        try:
            config = self.source.load()
        except ConfigError as exc:
            self.wiring.sink.emit(events.config_error(self.source.path, [str(p) for p in exc.problems]))
            self.wiring.notifier.ready(f"config error, running on the previous config | {self.notifier_line()}")
            return
        old = self.parts
        if old.latency is not None:
            old.latency.cancel()
        parts = self.wiring.builder(config)
        parts.carry_over(old)  # counters, the breaker, what the scan and the diagnosis remember, the logs' offsets
        self.parts = parts
        self.wiring.watch.close()
        self.wiring.watch = self.wiring.watch_for(config)
        if config.metrics != self.wiring.outlet.config:  # the same counters, new outlets
            self.wiring.outlet.stop(None)
            self.wiring.outlet = self.wiring.outlet_for(config)
            problem = self.wiring.outlet.start()
            if problem:
                self.status.report([Problem(problem)])
        self.wiring.sink.mode = config.events
        self.wiring.hooks.configure(config.hooks)
        self.latency.next_at = self.mono()
        self.wiring.sink.emit(events.config_reloaded(config))
        self.scan()
        self.wiring.notifier.ready(self.notifier_line())

    def notifier_line(self) -> str:
        if self.obs is None:
            return "starting"
        return status_line(self.findings, self.obs, self.parts.engine.state.paused, self.status.condition.current)

    def shutdown(self) -> None:
        """A clean stop: no child left behind, the status saved, a stopped event."""
        self.wiring.notifier.stopping()
        self.parts.cancel.set()
        end = self.mono() + STOP_GRACE
        unfinished = not all([lane.wait(max(0.0, end - self.mono())) for lane in self.wiring.lanes.values()])
        if not unfinished:
            for lane in self.wiring.lanes.values():
                outcome = lane.take()
                if outcome is not None:
                    self._after_actions(*outcome)
        if self.parts.latency is not None:
            self.parts.latency.cancel()
        self.wiring.hooks.stop()
        self.wiring.watch.close()
        if self.obs is not None:
            self.status.write(self.parts, self.obs, self.scans, self.notifier_line(), [], stopped_at=self.wall())
        self.wiring.outlet.stop(self.snapshot)
        self.wiring.sink.emit(events.stopped(cut_short=unfinished))
        self.signals.restore()
        self.wiring.notifier.close()
        if not unfinished:
            self.wiring.waker.close()  # a lane still running would write to it
