"""Capture cost: reading what a hung probe's processes are doing (every thread's state, wchan,
syscall; the KVM fds) and classifying it, per hung probe, on the real qemu hung at chdir("/") in the sandbox.
The goal: under 5 ms of CPU.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Dict

from harness.sandbox import LibvirtSandbox

from watchdogd.diagnose.classify import classify
from watchdogd.observe.capture import Capturer
from watchdogd.service.app import build

from .common import sandbox_config

REPEATS = 100


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
    finally:
        box.release()
        waiting.wait(60)
    return {"capture_ms": round(cpu * 1000, 3), "threads": threads, "members": len(probe.members), "goal_ms": 5.0}
