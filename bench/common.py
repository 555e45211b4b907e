"""What the benchmark sections share: a config on disk for the sandboxed libvirt, percentiles, process readings
(psutil)."""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import psutil
import yaml
from harness.sandbox import LibvirtSandbox

from watchdogd.config import Config
from watchdogd.service.preflight import load_config


def sandbox_config(box: LibvirtSandbox, **overrides: Any) -> Tuple[str, Config, Path]:
    """A config file for the sandbox, its state dir fresh; (path, loaded config, state dir)."""
    state = Path(tempfile.mkdtemp(prefix="bench-state-", dir=box.root))  # goes with the sandbox
    path = state / "config.yaml"
    path.write_text(yaml.safe_dump(box.config(state, **overrides), sort_keys=False))
    return str(path), load_config(str(path), True), state


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile.

    >>> percentile([1, 2, 3, 4], 50)
    2
    >>> percentile([5.0], 95)
    5.0
    """
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float], digits: int = 3) -> Dict[str, Any]:
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), digits),
        "p95": round(percentile(values, 95), digits),
        "max": round(max(values), digits),
    }


def cpu_seconds(pid: int, with_children: bool = True) -> float:
    """user + system CPU of a process (and of its reaped children), in seconds (psutil: measured from outside)."""
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system + ((t.children_user + t.children_system) if with_children else 0.0)


def rss_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / (1024 * 1024)


def fd_count(pid: int) -> int:
    return int(psutil.Process(pid).num_fds())


def process_start_wall(pid: int) -> float:
    """When a process started, as wall time, to the clock tick.

    psutil's create_time() adds the start to /proc/stat's btime, which is whole
    seconds (seen here: 0.53 s off); its offset from psutil.boot_time() is exact, and
    is laid on a boot time read from CLOCK_BOOTTIME instead.
    """
    since_boot = psutil.Process(pid).create_time() - psutil.boot_time()
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME) + since_boot


def members_of(probe_dir: str) -> List[int]:
    """Every process whose command line names probe_dir (the bench's own view, not the watchdog's)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if any(probe_dir in arg for arg in p.info["cmdline"] or ()):
            found.append(p.pid)
    return found
