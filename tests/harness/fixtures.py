"""What the shared fixtures hand a test, typed: so a test's parameters say what it is given, and mypy checks it."""

from __future__ import annotations

import dataclasses
import subprocess
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from .service import RunningDaemon

WriteConfig = Callable[[Dict[str, Any]], str]  # a config dict -> the path of its YAML on disk
StartDaemon = Callable[..., RunningDaemon]  # (config path, **RunningDaemon's options) -> a running `kvm-watchdog run`
Processes = List["subprocess.Popen[Any]"]  # a test's own processes, ended by pid at its end


@dataclass
class HostileFigures:
    scenarios: int = 0
    failed: int = 0
    inputs_fuzzed: int = 0
    wrong_signals: int = 0
    bytes_lost: int = 0
    forged_escalations: int = 0  # host-wide actions caused by forged probes (must be 0)
    genuine_kill_delay_s: Optional[float] = None  # past the genuine probe's deadline, under a forged flood
    peak_rss_mb: Dict[str, float] = field(default_factory=dict)  # the daemon's VmHWM under each flood
    churn_scans_per_s: Optional[float] = None
    longest_ping_gap_s: Optional[float] = None  # between two WATCHDOG=1 under a flood, pinging every 5 s (goal <= 15 s)
    # ESC, BEL or newline bytes of untrusted input in any output (must be 0)
    raw_controls_in_output: Optional[int] = None
    files_changed_outside_state: Optional[int] = None  # modes or owners of files root did not make, changed (must be 0)

    def measured(self) -> Dict[str, Any]:
        """What the tests measured (not the pass/fail tally): what a pytest-xdist worker hands the controller."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("scenarios", "failed")}

    def add(self, other: Dict[str, Any]) -> None:
        """Another worker's measurements: counts add up, the worst of each figure stands."""
        for name, theirs in other.items():
            mine = getattr(self, name)
            if theirs is None:
                continue
            if isinstance(theirs, dict):
                mine.update(theirs)
            elif name in ("genuine_kill_delay_s", "churn_scans_per_s", "longest_ping_gap_s"):
                setattr(self, name, theirs if mine is None else max(mine, theirs))
            else:
                setattr(self, name, (mine or 0) + theirs)
