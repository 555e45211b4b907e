"""What the benchmark sections share: a config on disk for the sandboxed libvirt, percentiles, /proc readings."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import yaml
from harness.sandbox import LibvirtSandbox

from watchdogd.config import Config, load_config


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
    """utime + stime (and the reaped children's) of a process, in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rfind(b")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if with_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def process_start_wall(pid: int) -> float:
    """When a process started, as wall time (10 ms resolution: clock ticks)."""
    import time

    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    start_ticks = int(data[data.rfind(b")") + 2 :].split()[19])
    boot_wall = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    return boot_wall + start_ticks / os.sysconf("SC_CLK_TCK")


def members_of(probe_dir: str) -> List[int]:
    """Every process whose command line names probe_dir (the bench's own view, not the watchdog's)."""
    found = []
    needle = probe_dir.encode()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if needle in f.read():
                        found.append(int(name))
            except OSError:
                pass
    return found
