"""The figures the fleet sees, counted as the daemon goes: no Prometheus client needed to count them.

Counters (findings opened, actions by result, domcaps timeouts, the latency
histogram) are kept in state_dir/metrics.json, so rate() and increase() stay right
across a restart; the gauges of one scan are one Snapshot, replaced whole after each
scan, so a scrape from another thread always sees one scan's figures.
report.metrics turns them into Prometheus metrics, only where the operator asked.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..config import Config, DetectConfig, MetricsConfig
from ..model import Finding, LatencyResult, Observation
from ..problems import Problem
from ..state import StateStore
from ..thresholds import ProbeState, probe_state
from ..typing_compat import Protocol

STATE_FILE = "metrics.json"
# seconds: separate a healthy answer (ms) from a probing libvirt (s) from a timeout (tens of s)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RESULTS = ("ok", "failed", "skipped", "dry_run")
PROBE_STATES = tuple(s.value for s in (ProbeState.RUNNING, ProbeState.HUNG, ProbeState.STALE))  # the metric's labels


@dataclass
class Counters:
    """What must keep counting across restarts."""

    opened: Dict[str, int] = field(default_factory=dict)  # finding kind -> findings opened
    actions: Dict[str, int] = field(default_factory=dict)  # "action/result" -> count
    timeouts: int = 0
    buckets: List[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))  # per bucket, the last one +Inf
    latency_sum: float = 0.0

    def to_json(self) -> Dict[str, object]:
        return {
            "opened": self.opened,
            "actions": self.actions,
            "timeouts": self.timeouts,
            "buckets": self.buckets,
            "latency_sum": self.latency_sum,
        }

    @classmethod
    def from_json(cls, data: object) -> Counters:
        """Lenient: a damaged or older file loses only what does not parse."""
        out = cls()
        if not isinstance(data, dict):
            return out
        for name in ("opened", "actions"):
            value = data.get(name)
            if isinstance(value, dict):
                setattr(out, name, {str(k): int(v) for k, v in value.items() if isinstance(v, int) and v >= 0})
        timeouts, buckets, total = data.get("timeouts"), data.get("buckets"), data.get("latency_sum")
        out.timeouts = timeouts if isinstance(timeouts, int) and timeouts >= 0 else 0
        if (
            isinstance(buckets, list)
            and len(buckets) == len(BUCKETS) + 1
            and all(isinstance(b, int) and b >= 0 for b in buckets)
        ):
            out.buckets = list(buckets)
        out.latency_sum = float(total) if isinstance(total, (int, float)) and total >= 0 else 0.0
        return out


@dataclass(frozen=True)
class Snapshot:
    """One scan's gauges, replaced whole after each scan."""

    findings: Tuple[Finding, ...]
    probes: Dict[str, int]
    paused: bool
    cache_entries: Optional[int]
    kernel_release: str
    kernel_last_good: str
    last_scan: float
    scan_seconds: float
    interval: float
    up: bool = True
    vm_starts_blocked: bool = False  # the host condition (decide/condition.py)


def snapshot_of(
    obs: Observation, findings: Sequence[Finding], config: Config, paused: bool, seconds: float, blocked: bool = False
) -> Snapshot:
    """The gauges of one scan that took `seconds`; blocked: the host condition vm_starts_blocked is open."""
    return Snapshot(
        findings=tuple(findings),
        probes=probe_states(obs, config.detect),
        paused=paused,
        cache_entries=len(obs.cache_entries) if obs.cache_entries is not None else None,
        kernel_release=obs.kernel_release,
        kernel_last_good=obs.kernel_last_good or "",
        last_scan=obs.taken_wall,
        scan_seconds=seconds,
        interval=config.interval,
        vm_starts_blocked=blocked,
    )


def probe_states(obs: Observation, detect: DetectConfig) -> Dict[str, int]:
    """How many probes are running (not hung yet), hung, or stale dirs."""
    counts = dict.fromkeys(PROBE_STATES, 0)
    for probe in obs.probes:
        state = probe_state(probe, detect).value
        if state in counts:
            counts[state] += 1
    return counts


@dataclass(frozen=True)
class Versions:
    libvirt: str = ""
    qemu: str = ""


def dotted(version: Optional[int]) -> str:
    """libvirt's packed version as people write it.

    >>> dotted(9000000), dotted(7002005), dotted(None)
    ('9.0.0', '7.2.5', '')
    """
    if not version:
        return ""
    return f"{version // 1000000}.{version // 1000 % 1000}.{version % 1000}"


class Figures:
    """The counters and the latest snapshot; the loop writes, a scrape thread reads."""

    def __init__(self, counters: Counters):
        self.counters = counters
        self.snapshot: Optional[Snapshot] = None
        self.versions = Versions()  # libvirt's and QEMU's, as the last latency call that answered told them
        self._lock = threading.Lock()

    def copy_counters(self) -> Counters:
        with self._lock:
            return Counters.from_json(self.counters.to_json())

    def opened(self, findings: Sequence[Finding]) -> None:
        with self._lock:
            for f in findings:
                self.counters.opened[f.kind] = self.counters.opened.get(f.kind, 0) + 1

    def acted(self, action: str, result: str) -> None:
        with self._lock:
            key = f"{action}/{result}"
            self.counters.actions[key] = self.counters.actions.get(key, 0) + 1

    def latency(self, result: LatencyResult, timeout: float) -> None:
        """One finished latency probe into the histogram (a skipped or unreachable one is not a latency)."""
        if result.libvirt_version or result.qemu_version:
            self.versions = Versions(
                dotted(result.libvirt_version) or self.versions.libvirt,
                dotted(result.qemu_version) or self.versions.qemu,
            )
        if result.answered and result.domcaps_ms is not None:
            seconds = result.domcaps_ms / 1000
        elif result.timed_out and result.reachable:
            seconds = timeout
        else:
            return
        with self._lock:
            if result.timed_out:
                self.counters.timeouts += 1
            self.counters.buckets[next((i for i, b in enumerate(BUCKETS) if seconds <= b), len(BUCKETS))] += 1
            self.counters.latency_sum += seconds


class Outlet(Protocol):
    """Where the figures go after each scan (report.metrics.Metrics; NoOutlet where none is configured)."""

    config: MetricsConfig

    def start(self) -> Optional[str]: ...

    def publish(self, snapshot: Snapshot) -> List[Problem]: ...

    def stop(self, last: Optional[Snapshot]) -> None: ...


class NoOutlet:
    """metrics: off (the default): nothing is exported, nothing is written."""

    def __init__(self, config: MetricsConfig):
        self.config = config

    def start(self) -> Optional[str]:
        return None

    def publish(self, snapshot: Snapshot) -> List[Problem]:
        return []

    def stop(self, last: Optional[Snapshot]) -> None:
        pass


def restore_counters(state: StateStore) -> Counters:
    return Counters.from_json(state.read_json(STATE_FILE))
