"""The one path every command takes: observe -> assess -> decide -> act.

`check` looks, `remediate` looks, plans and acts once, `run` does the same on its
loop with the action lanes in between; all three go through a Pipeline, built by
the composition root (service.app) from one config.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import AbstractSet, Callable, List, Optional, Sequence, Tuple

from ..act.actions import ActionRecord, Actor
from ..config import Config, LatencyWhen
from ..decide.assess import assess
from ..decide.policy import ALL_LANES, STATE_FILE, BreakerChange, Lane, PlannedAction, PolicyEngine
from ..diagnose.diagnostician import Diagnostician
from ..model import ActionName, Finding, LatencyResult, Observation
from ..observe.domain_logs import DomainLogs
from ..observe.kernel_journal import BlockedTasks
from ..observe.latency import LatencyProbe, why_not_connect
from ..observe.libvirt_journal import ProbeFailure, ProbeFailures
from ..observe.procfs import ProcFS
from ..observe.scan import Scanner
from ..problems import Problem, Problems
from ..state import StateError, StateStore
from ..typing_compat import Protocol


class Observer(Protocol):
    """The observe seam: one read-only look at the host (the real one is observe.scan.Scanner)."""

    def observe(self, latency: Optional[LatencyResult] = None, full: Optional[bool] = None) -> Observation: ...


@dataclass
class Pipeline:
    """The parts one config makes, and the one path through them that every command takes."""

    config: Config
    proc: ProcFS
    state: StateStore
    scanner: Observer
    latency: Optional[LatencyProbe]
    engine: PolicyEngine
    actor: Actor
    diagnostician: Optional[Diagnostician] = None
    failures: Optional[ProbeFailures] = None  # libvirt's probe-failure entries in its journal
    domain_logs: Optional[DomainLogs] = None  # the guests' QEMU logs
    blocked: Optional[BlockedTasks] = None  # the kernel's hung-task lines
    activated: Callable[[], bool] = lambda: False  # is libvirt socket-activated here (an idle timer to respect)?
    cancel: threading.Event = field(default_factory=threading.Event)  # set: end long actions now
    # what the parts met and could not see or save; each look drains it
    problems: Problems = field(default_factory=Problems)

    def carry_over(self, old: Pipeline) -> None:
        """A reload: what the old parts remember goes on in the new ones (nothing is read again as new, nothing
        forgotten)."""
        self.engine.state = old.engine.state
        for problem in old.problems.drain():  # met since the last scan: told by the next one
            self.problems.add(problem.text, problem.key)
        if isinstance(self.scanner, Scanner) and isinstance(old.scanner, Scanner):
            self.scanner.adopt(old.scanner)
        if self.diagnostician is not None and old.diagnostician is not None:
            self.diagnostician.adopt(old.diagnostician)
        if self.failures is not None and old.failures is not None:
            self.failures.adopt(old.failures)
        self.blocked = old.blocked  # the daemon's kernel reader, where it was, and what it found
        if self.domain_logs is not None and old.domain_logs is not None:
            if old.domain_logs.log_dir == self.domain_logs.log_dir:  # its offsets: no line lost or read twice
                old.domain_logs.problems = self.problems
                self.domain_logs = old.domain_logs
        self.proc.slow = old.proc.slow  # the workers, and the processes found stuck: none costs a deadline again
        if self.diagnostician is not None:
            self.diagnostician.readers.capturer.slow = old.proc.slow

    def may_connect(self, obs: Optional[Observation]) -> Optional[str]:
        """Why no latency call may go out now (never wake libvirt, never keep it from idling out), or None."""
        if self.config.latency.when is LatencyWhen.ALWAYS or not self.activated():
            return None  # nothing listens to start, no idle timer to reset: a call disturbs nothing
        return why_not_connect(obs, self.config.latency.when)

    def look(
        self, latency: Optional[LatencyResult], seen: Optional[Observation] = None
    ) -> Tuple[Observation, List[Finding]]:
        """observe (or `seen`, an observation just taken) -> diagnose (why probes hung, captured before anything acts)
        -> assess."""
        obs = replace(seen, latency=latency) if seen is not None else self.scanner.observe(latency)
        for (pid, start), path in list(self.proc.slow.stuck.items()):
            self.problems.add(
                f"{path} did not answer within {self.proc.slow.deadline:g} s: process {pid} is hung in the kernel "
                "and is skipped until it answers (the watchdog never waits on a process it reads)",
                f"slow-read:{pid}:{start}",
            )
        failed: Sequence[ProbeFailure] = ()
        if self.failures is not None:
            self.failures.read()
            failed = self.failures.current(obs.cache_entries)
            for problem in self.failures.save():
                self.problems.add(problem.text, problem.key)
        logged = self.domain_logs.poll() if self.domain_logs is not None else None
        unread = self.blocked.read() if self.blocked is not None else None
        if unread:
            self.problems.add(unread, "kernel-journal")
        insight = None
        if self.diagnostician is not None:
            insight = self.diagnostician.insight(obs, failed, logged, self.blocked)
        obs = replace(obs, errors=obs.errors + self.problems.drain())  # the state's, the logs' since the last look
        return obs, assess(obs, self.config, insight)

    def follow_logs(self, now: float) -> bool:
        """Between scans, as soon as inotify says a log grew: True when a VM start failure opened or ended."""
        if self.domain_logs is None or self.diagnostician is None:
            return False
        return self.diagnostician.vm_starts.read(self.domain_logs.poll(), now)

    def acted(self, records: Sequence[ActionRecord]) -> None:
        """What was done: a probe the watchdog ended makes libvirt log a failure that is that hang's, not news."""
        for r in records:
            if r.action is ActionName.KILL_PROBE and r.changed_something and self.failures is not None:
                self.failures.ended_a_probe(r.at, time.time())

    def keep_incidents(self) -> List[Problem]:
        """After a scan has been reported and acted on: the incident bundles it captured."""
        return self.diagnostician.keep_incidents() if self.diagnostician is not None else []

    def plan(
        self, findings: Sequence[Finding], now: float, dry_run: bool = False, lanes: AbstractSet[Lane] = ALL_LANES
    ) -> List[PlannedAction]:
        """decide."""
        return self.engine.decide(findings, now, dry_run=dry_run, lanes=lanes)

    def save_progress(self, obs: Observation) -> List[Problem]:
        """Persist the policy counters and, when probing worked, the kernel it worked on."""
        problems: List[Problem] = []
        try:
            self.state.write_json(STATE_FILE, self.engine.snapshot())
        except StateError as exc:
            problems.append(exc.problem("; policy counters are kept in memory only"))
        if self.diagnostician is not None:
            problems += self.diagnostician.history.save(self.state)
        lat = obs.latency
        if lat is not None and lat.answered:
            try:
                self.state.record_good_kernel(obs.kernel_release)
            except StateError as exc:
                problems.append(exc.problem())
        return problems


def scan_once(parts: Pipeline, with_latency: bool = True) -> Tuple[Observation, List[Finding]]:
    """One full, read-only scan, the latency probe first (it may fill the cache), where it may go out at all."""
    if not with_latency or parts.latency is None:
        return parts.look(None)
    seen = parts.scanner.observe(None)
    idle = parts.may_connect(seen)
    if idle:
        return parts.look(LatencyResult(reachable=None, answered=False, skipped=idle), seen)  # one look is enough
    return parts.look(parts.latency.run())  # a fresh one: the call may have filled the cache meanwhile


@dataclass
class Remediation:
    before: List[Finding]
    actions: List[ActionRecord]
    breaker: Optional[BreakerChange]  # when the breaker changed
    after: Observation
    findings: List[Finding]  # what is left after acting
    problems: List[Problem]  # state that could not be saved, and the like


def remediate_once(parts: Pipeline, dry_run: bool = False, with_latency: bool = True) -> Remediation:
    """One scan, the policies applied once, then a fresh scan of what is left."""
    obs, findings = scan_once(parts, with_latency)
    records, breaker = parts.actor.execute(parts.plan(findings, obs.taken_wall, dry_run=dry_run))
    parts.acted(records)
    problems = parts.keep_incidents()
    if not dry_run:
        problems += parts.save_progress(obs)
    acted = any(r.changed_something for r in records)
    if acted:
        after, left = scan_once(parts, with_latency)
    else:
        after, left = obs, findings
    return Remediation(findings, records, breaker, after, left, problems)
