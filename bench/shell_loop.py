"""Time to recovery under the shell-loop alternative, run as cron would run it: once a minute.

The hang is injected at a random point of the minute (as it would happen); the
loop runs bench/shell_watchdog.sh at each minute boundary of its own clock.
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

from harness.sandbox import LibvirtSandbox
from harness.wait import wait_for

from .common import members_of, process_start_wall, summary
from .detection import _domcaps_until_ok

SCRIPT = Path(__file__).resolve().parent / "shell_watchdog.sh"
PERIOD = 60.0


def measure(box: LibvirtSandbox, trials: int, seed: int = 1) -> Dict[str, Any]:
    rng = random.Random(seed)
    recoveries: List[float] = []
    for _ in range(trials):
        box.reset()
        stop = threading.Event()
        epoch = time.monotonic()

        def cron() -> None:
            tick = epoch + PERIOD
            while not stop.wait(max(0.0, tick - time.monotonic())):
                subprocess.run([str(SCRIPT), box.uri], timeout=120, check=False)
                tick += PERIOD

        loop = threading.Thread(target=cron, daemon=True)
        loop.start()
        try:
            stop.wait(rng.uniform(0, PERIOD))  # the hang comes at a random point of the minute
            box.arm("hang-init", 1)
            caller = subprocess.Popen(
                ["virsh", "-c", box.uri, "domcapabilities"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            probe = wait_for(box.hung_probe, 30, "the hung probe")
            started = min(process_start_wall(pid) for pid in members_of(str(probe["dir"])))
            ok_at = _domcaps_until_ok(box, time.monotonic() + 3 * PERIOD)
            caller.wait(60)
            recoveries.append(ok_at - started)
        finally:
            stop.set()
            loop.join(150)
    return {"trials": trials, "period_s": PERIOD, "time_to_recovery_s": summary(recoveries)}
