"""The daemon's footprint at default settings: RSS and CPU over a window, healthy host, with and without 10,000 extra
processes.

CPU counts the daemon and its reaped children (the latency probe runs in a child).
"""

from __future__ import annotations

import time
from typing import Any, Dict, List

from harness.sandbox import LibvirtSandbox
from harness.service import RunningDaemon
from harness.wait import wait_for

from .common import cpu_seconds, fd_count, rss_mb, sandbox_config
from .load import ProcessLoad


def _window(box: LibvirtSandbox, seconds: float) -> Dict[str, Any]:
    path, config, state = sandbox_config(box, events="journal")  # every other key at its default
    daemon = RunningDaemon(path, state)
    try:
        wait_for((state / "status.json").exists, 60, "the daemon's first scan")
        time.sleep(2)  # startup (imports, first latency probe) is not the steady state
        cpu0, t0 = cpu_seconds(daemon.pid), time.monotonic()
        rss: List[float] = []
        while time.monotonic() - t0 < seconds:
            rss.append(rss_mb(daemon.pid))
            time.sleep(1)
        cpu1, t1 = cpu_seconds(daemon.pid), time.monotonic()
        fds = fd_count(daemon.pid)
    finally:
        daemon.stop()
    return {
        "window_s": round(t1 - t0, 1),
        "interval_s": config.interval,
        "latency_every_s": config.latency.every,
        "rss_mb_max": round(max(rss), 1),
        "cpu_s": round(cpu1 - cpu0, 3),
        "cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / (t1 - t0), 3),
        "open_fds": fds,
    }


def measure(box: LibvirtSandbox, seconds: float, load: int) -> Dict[str, Any]:
    healthy = _window(box, seconds)
    with ProcessLoad(load):
        loaded = _window(box, seconds)
    loaded["extra_processes"] = load
    return {"healthy": healthy, "with_extra_processes": loaded, "goals": {"rss_mb": 40, "cpu_percent": 0.2}}
