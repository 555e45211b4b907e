"""Detection delay and time to recovery, on the real daemon and the sandboxed libvirt.

Per trial: a one-shot `hang-init` probe; the bench reads the probe's processes'
start times from /proc itself (not from the watchdog), so
  delay    = journald's receive time of the probe_hung event - (probe start + probe_hung_after)
  recovery = end of the first successful `virsh domcapabilities` - probe start
with `interval: 30s`, so only the per-probe deadline timer can be what finds it in time.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any, Dict, List

from harness.sandbox import LibvirtSandbox
from harness.service import RunningDaemon
from harness.wait import wait_for

from .common import members_of, process_start_wall, sandbox_config, summary


def _domcaps_until_ok(box: LibvirtSandbox, deadline: float) -> float:
    """Call domcapabilities back to back (the first waits behind the hang); the wall time the first success ended."""
    while time.monotonic() < deadline:
        r = subprocess.run(["virsh", "-c", box.uri, "domcapabilities"], capture_output=True, timeout=120)
        if r.returncode == 0:
            return time.time()
    raise TimeoutError("domcapabilities never worked again")


def measure(box: LibvirtSandbox, trials: int, hung_after: float) -> Dict[str, Any]:
    path, _, state = sandbox_config(
        box,
        interval="30s",
        events="journal",
        detect={"probe_hung_after": f"{hung_after:g}s"},
        limits={"actions": 1000, "per": "1h"},
    )
    daemon = RunningDaemon(path, state)
    delays: List[float] = []
    recoveries: List[float] = []
    try:
        wait_for((state / "status.json").exists, 30, "the daemon's first scan")
        for _ in range(trials):
            box.reset()
            box.arm("hang-init", 1)
            caller = subprocess.Popen(
                ["virsh", "-c", box.uri, "domcapabilities"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            probe = wait_for(box.hung_probe, 30, "the hung probe")
            probe_dir = str(probe["dir"])
            started = min(process_start_wall(pid) for pid in members_of(probe_dir))
            ok_at = _domcaps_until_ok(box, time.monotonic() + 120)
            caller.wait(60)
            [event] = wait_for(
                lambda: daemon.journal_events("probe_hung", KVMWD_STATE="open", KVMWD_PROBE_DIR=probe_dir),
                30,
                "the probe_hung event",
            )
            delays.append(int(event["__REALTIME_TIMESTAMP"]) / 1e6 - (started + hung_after))
            recoveries.append(ok_at - started)
    finally:
        daemon.stop()
    return {
        "trials": trials,
        "interval_s": 30,
        "probe_hung_after_s": hung_after,
        "detection_delay_s": summary(delays),
        "time_to_recovery_s": summary(recoveries),
        "recovery_goal_s": hung_after + 3,
    }
