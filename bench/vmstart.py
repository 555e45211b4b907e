"""How soon a VM that fails to start is told, at `interval: 30s`: the log line to the vm_start_failed event.

Per trial: a domain whose emulator prints the incident's PMU lines and aborts
(the fake emulator's `pmu` VM fault) is started; a watcher thread polls the
domain's log every 5 ms and notes when the PMU line first appears there; the
delay is journald's receive time of the vm_start_failed open event minus that.
Then the domain starts cleanly (the real emulator), the finding resolves, and the
next trial begins. The full scan runs every 30 s: only the inotify watch on the
log dir can tell it in time.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from harness.sandbox import LibvirtSandbox
from harness.service import RunningDaemon
from harness.wait import wait_for

from .common import sandbox_config, summary

DOMAIN = "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os></domain>"
LINE = "PMU: KVM_SET_DEVICE_ATTR: Invalid argument"


def _first_seen(log: Path, offset: int, stop: threading.Event, out: List[float]) -> None:
    while not stop.is_set():
        try:
            with open(log, "rb") as f:
                f.seek(offset)
                if LINE.encode() in f.read():
                    out.append(time.time())
                    return
        except OSError:
            pass
        time.sleep(0.005)


def measure(box: LibvirtSandbox, trials: int) -> Dict[str, Any]:
    name = "bench-vmstart"
    xml = Path(box.root) / f"{name}.xml"
    xml.write_text(DOMAIN.format(name=name))
    box.virsh("define", str(xml))
    path, _, state = sandbox_config(box, interval="30s", events="journal", latency={"enabled": False})
    daemon = RunningDaemon(path, state)
    delays: List[float] = []
    log = box.log_dir / f"{name}.log"
    try:
        wait_for((state / "scan.json").exists, 30, "the daemon's first scan")
        for trial in range(trials):
            offset = log.stat().st_size if log.exists() else 0
            seen: List[float] = []
            stop = threading.Event()
            watcher = threading.Thread(target=_first_seen, args=(log, offset, stop, seen), daemon=True)
            watcher.start()
            box.vm_fault("pmu")
            box.virsh("start", name)
            events = wait_for(
                lambda: (e := daemon.journal_events("vm_start_failed", KVMWD_STATE="open")) and len(e) > trial and e,
                60,
                "the vm_start_failed event",
            )
            stop.set()
            watcher.join(5)
            line_at: Optional[float] = seen[0] if seen else None
            if line_at is None:
                raise RuntimeError("the PMU line never appeared in the domain's log")
            delays.append(int(events[trial]["__REALTIME_TIMESTAMP"]) / 1e6 - line_at)
            box.vm_fault("")
            box.virsh("start", name)
            wait_for(
                lambda: len(daemon.journal_events("vm_start_failed", KVMWD_STATE="resolved")) > trial,
                60,
                "the clean start to resolve it",
            )
            box.virsh("destroy", name)
    finally:
        daemon.stop()
        box.vm_fault("")
        box.virsh("destroy", name)
        box.virsh("undefine", name)
    return {"trials": trials, "interval_s": 30, "delay_s": summary(delays), "goal_s": 1.0}
