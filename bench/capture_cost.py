"""Capture cost: reading what a hung probe's processes are doing (every thread's state, wchan,
syscall; the KVM fds) and classifying it, per hung probe, on the real qemu hung at chdir("/") in the sandbox.
The goal: under 5 ms of CPU. And the capture helper's start, as systemd runs it for one probe (the console
script's `capture-helper`, answering one request), beside what it cost through the whole CLI: the daemon waits
on it with a deadline.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List

from harness.sandbox import LibvirtSandbox

from watchdogd.diagnose.classify import classify
from watchdogd.observe.capture import Capturer, live_members
from watchdogd.observe.capture_helper import request_of
from watchdogd.service.app import build

from .common import sandbox_config

REPEATS = 100
STARTS = 15
# the console script as systemd starts it for one connection, and the same answer through the whole CLI
HELPER = "from watchdogd.service.launcher import entry; entry(['capture-helper'])"
THROUGH_CLI = "import sys; from watchdogd.service.cli import main; sys.exit(main(['capture-helper']))"


def _start_ms(code: str, request: str) -> float:
    """Wall time of one helper start to its answer, median of STARTS."""
    times: List[float] = []
    for _ in range(STARTS):
        before = time.monotonic()
        done = subprocess.run([sys.executable, "-c", code], input=request, capture_output=True, text=True, timeout=60)
        times.append(time.monotonic() - before)
        assert done.returncode == 0 and json.loads(done.stdout)["processes"], done.stderr
    return round(statistics.median(times) * 1000, 1)


def measure(box: LibvirtSandbox) -> Dict[str, Any]:
    _, config, _ = sandbox_config(box)
    box.reset()
    box.build_hang_shim()
    waiting = box.hang("real-hang", 1)  # the real qemu, stopped where the incident stopped
    try:
        [probe] = [p for p in build(config).scanner.observe(full=True).probes if p.live_members]
        capturer = Capturer()

        def once() -> float:
            before = time.process_time()
            classify(probe, capturer.capture(probe))
            return time.process_time() - before

        cpu = statistics.median(once() for _ in range(REPEATS))
        threads = sum(len(p.threads) for p in capturer.capture(probe).processes)
        request = request_of(probe.path, live_members(probe)) + "\n"
        helper_ms, through_cli_ms = _start_ms(HELPER, request), _start_ms(THROUGH_CLI, request)
    finally:
        box.release()
        waiting.wait(60)
    return {
        "capture_ms": round(cpu * 1000, 3),
        "threads": threads,
        "members": len(probe.members),
        "goal_ms": 5.0,
        "helper_start_ms": helper_ms,
        "helper_start_through_cli_ms": through_cli_ms,
    }
