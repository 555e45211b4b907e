"""Metrics cost per scan: what publishing one scan's figures costs, at 1,000 extra processes.

CPU time around Metrics.publish() (the client's exposition, the textfile written and
renamed) after a real scan of the sandbox with the extra processes running, and around
one scrape of the HTTP endpoint's exposition. The goal: under 1 ms per scan.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

from harness.sandbox import LibvirtSandbox
from prometheus_client import generate_latest

from watchdogd.config import MetricsConfig
from watchdogd.report.figures import Counters, Figures, Snapshot, probe_states
from watchdogd.report.metrics import Metrics
from watchdogd.service.app import build

from .common import sandbox_config
from .load import ProcessLoad

REPEATS = 200


def measure(box: LibvirtSandbox, extra: int) -> Dict[str, Any]:
    _, config, state = sandbox_config(box)
    textfile = Path(tempfile.mkdtemp(prefix="bench-textfile-", dir=box.root)) / "kvm-watchdog.prom"
    with ProcessLoad(extra):
        parts = build(config)
        obs, findings = parts.look(None)
        figures = Figures(Counters())
        metrics = Metrics(MetricsConfig(textfile=str(textfile)), parts.state, figures)
        snap = Snapshot(
            tuple(findings),
            probe_states(obs, config.detect),
            False,
            1,
            obs.kernel_release,
            "",
            obs.taken_wall,
            0.001,
            config.interval,
        )

        def cpu(fn: Any) -> float:
            before = time.process_time()
            fn()
            return time.process_time() - before

        publish = statistics.median(cpu(lambda: metrics.publish(snap)) for _ in range(REPEATS))
        scrape = statistics.median(cpu(lambda: generate_latest(metrics.registry)) for _ in range(REPEATS))
    return {
        "extra_processes": extra,
        "publish_ms": round(publish * 1000, 3),
        "scrape_ms": round(scrape * 1000, 3),
        "textfile_bytes": textfile.stat().st_size,
        "goal_ms": 1.0,
    }
