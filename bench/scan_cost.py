"""Scan cost against process count: one full watchdog scan vs `ps -e -o pid,stat,args` and `pgrep -f qmp-`.

CPU time, not wall time (the machine is shared): the watchdog's from
time.process_time() around Scanner.observe(full=True), the tools' from the
children's rusage around each run (their exec included, as an operator pays it).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import time
from typing import Any, Callable, Dict, List

from harness.sandbox import LibvirtSandbox

from watchdogd.service.app import build

from .common import sandbox_config
from .load import ProcessLoad

REPEATS = 7


def _child_cpu(argv: List[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _own_cpu(fn: Callable[[], Any]) -> float:
    before = time.process_time()
    fn()
    return time.process_time() - before


def measure(box: LibvirtSandbox, sizes: List[int]) -> List[Dict[str, Any]]:
    """Per size: the full scan (what runs while a probe dir exists), the idle-interval scan, ps and pgrep."""
    _, config, _ = sandbox_config(box)
    rows = []
    for extra in sizes:
        with ProcessLoad(extra):
            total = sum(1 for n in os.listdir("/proc") if n.isdigit())
            scanner = build(config).scanner
            scan = statistics.median(_own_cpu(lambda: scanner.observe(full=True)) for _ in range(REPEATS))
            scanner.observe()  # learns libvirt's pid; from here on an idle scan reads its subtree only
            idle = statistics.median(_own_cpu(scanner.observe) for _ in range(REPEATS))
            ps = statistics.median(_child_cpu(["ps", "-e", "-o", "pid,stat,args"]) for _ in range(REPEATS))
            pgrep = statistics.median(_child_cpu(["pgrep", "-f", "qmp-"]) for _ in range(REPEATS))
        rows.append(
            {
                "extra_processes": extra,
                "processes": total,
                "watchdog_full_scan_ms": round(scan * 1000, 2),
                "watchdog_idle_scan_ms": round(idle * 1000, 2),
                "ps_ms": round(ps * 1000, 2),
                "pgrep_ms": round(pgrep * 1000, 2),
                "ratio_to_ps": round(scan / ps, 3) if ps else None,
                "ratio_to_pgrep": round(scan / pgrep, 3) if pgrep else None,
            }
        )
    return rows


def measure_systemd(box: LibvirtSandbox, sizes: List[int]) -> List[Dict[str, Any]]:
    """Per size, while a hung probe's dir exists: the systemd host's scan (libvirt's unit cgroup, no walk), the full
    walk a host without systemd makes then, and ps. libvirt is put in a unit cgroup of its own by hand (this
    machine's PID 1 is no systemd); the scanner is told systemd runs, as /run/systemd/system tells it there."""
    from harness.unit_cgroup import UnitCgroup

    _, config, _ = sandbox_config(box)
    rows = []
    with UnitCgroup("libvirtd.service") as unit:
        assert box.supervisor is not None
        unit.place([box.supervisor.pid, box.libvirtd_pid])
        waiting = box.hang("hang-init", count=1)
        try:
            for extra in sizes:
                with ProcessLoad(extra):
                    total = sum(1 for n in os.listdir("/proc") if n.isdigit())
                    scanner = build(config).scanner
                    scanner.proc.systemd = True
                    scanner.observe()  # the first scan walks: it learns libvirt's daemons
                    walks = scanner.full_walks
                    unit_scan = statistics.median(_own_cpu(scanner.observe) for _ in range(REPEATS))
                    assert scanner.full_walks == walks, "the systemd host's scan walked /proc"
                    members = len(scanner.observe().probes[0].members)
                    walk = statistics.median(_own_cpu(lambda: scanner.observe(full=True)) for _ in range(REPEATS))
                    ps = statistics.median(_child_cpu(["ps", "-e", "-o", "pid,stat,args"]) for _ in range(REPEATS))
                rows.append(
                    {
                        "extra_processes": extra,
                        "processes": total,
                        "hung_probe_members": members,
                        "systemd_scan_ms": round(unit_scan * 1000, 3),
                        "full_walk_ms": round(walk * 1000, 2),
                        "ps_ms": round(ps * 1000, 2),
                    }
                )
        finally:
            box.release()
            waiting.wait(30)
    return rows
