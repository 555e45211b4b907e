"""When the next getDomainCapabilities call goes out, and the last answer: one child at a time, polled from the loop."""

from __future__ import annotations

from typing import Optional

from ..model import LatencyResult, Observation
from ..report.figures import Figures
from .pipeline import Pipeline


class LatencySchedule:
    """The latency lane of the loop: never wakes libvirt, never keeps an idle one from exiting.

    `result` is what the next scan assesses: the last answer, or why no call went out
    (libvirt idle). `is_new` says an answer came that no saved status has seen yet."""

    def __init__(self, first_at: float):
        self.result: Optional[LatencyResult] = None
        self.is_new = False
        self.next_at = first_at  # the first call goes out at once

    def due(self, parts: Pipeline) -> Optional[float]:
        """The moment the loop must wake for this lane: the child's deadline, or the next call."""
        probe = parts.latency
        if probe is None:
            return None
        return probe.deadline if probe.in_flight and probe.deadline is not None else self.next_at

    def service(self, now: float, parts: Pipeline, obs: Optional[Observation], figures: Figures) -> bool:
        """Take an answer, or start a call when one is due and allowed; True when an answer came (scan now)."""
        probe, config = parts.latency, parts.config
        if probe is None:
            return False
        if probe.in_flight:
            result = probe.poll()
            if result is None:
                return False
            figures.latency(result, config.latency.timeout)
            self.result, self.is_new = result, True
            return True
        soon = now + min(config.latency.every, config.interval)
        idle = parts.may_connect(obs)  # asked every turn: the STATUS line says idle as soon as it is
        if idle is not None:
            if self.result is None or self.result.skipped != idle:
                self.result, self.is_new = LatencyResult(reachable=None, answered=False, skipped=idle), False
            self.next_at = max(self.next_at, soon)  # ask again then, not before
            return False
        if now >= self.next_at:
            if self.result is not None and self.result.skipped:
                # a call goes out: "libvirt idle" is no longer true (the answer comes with the child)
                self.result = None
            skipped = probe.start()
            self.next_at = now + config.latency.every if skipped is None else soon
        return False
