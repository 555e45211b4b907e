"""Soak: interval 0.5 s and a hang injected every 20 s, for many minutes.

Counts what must balance: every hang recovered (domcapabilities works after each),
one open, one kill_probe ok and one resolved event per hang in the journal, and
the daemon's RSS and open fds at the start against the end.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any, Dict, List, Tuple

from harness.sandbox import LibvirtSandbox
from harness.service import RunningDaemon
from harness.wait import wait_for

from .common import fd_count, rss_mb, sandbox_config

EVERY = 20.0


def measure(box: LibvirtSandbox, minutes: float) -> Dict[str, Any]:
    path, _, state = sandbox_config(
        box,
        interval="0.5s",
        events="journal",
        detect={"probe_hung_after": "3s"},
        policies=[{"name": "kill-hung-probes", "on": "probe_hung", "do": ["kill_probe"]}],
        limits={"actions": 100000, "per": "1h"},
    )
    box.reset()
    daemon = RunningDaemon(path, state)
    samples: List[Tuple[float, float, int]] = []
    hangs = recovered = 0
    try:
        wait_for((state / "status.json").exists, 60, "the daemon's first scan")
        started = time.monotonic()
        samples.append((0.0, rss_mb(daemon.pid), fd_count(daemon.pid)))
        while time.monotonic() - started < minutes * 60:
            slot = started + (hangs + 1) * EVERY
            box.arm("hang-init", 1)
            subprocess.Popen(
                ["virsh", "-c", box.uri, "domcapabilities"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            hangs += 1
            try:
                wait_for(box.hung_probe, 30, "the hung probe")
                wait_for(lambda: box.domcaps(timeout=30).returncode == 0, 30, "domcapabilities to work again")
                recovered += 1
            except AssertionError:
                pass
            samples.append((time.monotonic() - started, rss_mb(daemon.pid), fd_count(daemon.pid)))
            time.sleep(max(0.0, slot - time.monotonic()))  # the bench paces its faults (tests never sleep)
        wait_for(
            lambda: len(daemon.journal_events("probe_hung", KVMWD_STATE="resolved")) >= recovered,
            60,
            "the last resolved event",
        )
        counts = {
            "probe_hung_open": len(daemon.journal_events("probe_hung", KVMWD_STATE="open")),
            "kill_probe_ok": len(daemon.journal_events("action", KVMWD_ACTION="kill_probe", KVMWD_RESULT="ok")),
            "probe_hung_resolved": len(daemon.journal_events("probe_hung", KVMWD_STATE="resolved")),
            "actions_not_ok": len([e for e in daemon.journal_events("action") if e.get("KVMWD_RESULT") != "ok"]),
        }
        alive = daemon.alive()
        fd_kinds = sorted(_fd_kind(daemon.pid, fd) for fd in os.listdir(f"/proc/{daemon.pid}/fd"))
    finally:
        daemon.stop()
    first, last = samples[0], samples[-1]
    return {
        "minutes": minutes,
        "interval_s": 0.5,
        "hang_every_s": EVERY,
        "hangs": hangs,
        "recovered": recovered,
        "events": counts,
        "events_expected_each": hangs,
        "daemon_alive_at_end": alive,
        "rss_mb": {"start": round(first[1], 1), "end": round(last[1], 1), "max": round(max(s[1] for s in samples), 1)},
        "open_fds": {"start": first[2], "end": last[2], "max": max(s[2] for s in samples), "at_end": fd_kinds},
        # one sample after each recovery: growth shows as a trend, not as one high reading
        "series": {"rss_mb": [round(s[1], 1) for s in samples], "open_fds": [s[2] for s in samples]},
    }


def _fd_kind(pid: int, fd: str) -> str:
    try:
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return "gone"
    return target.split(":")[0] if ":" in target and not target.startswith("/") else target
