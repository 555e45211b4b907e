"""Installed, the watchdog is not its own guest: the count that opens the latency gate, on the real parts.

A socket-activated libvirt idles out when it has no client and no running domain;
the watchdog calls getDomainCapabilities only while libvirt is in use anyway (a probe
dir, or a guest). The daemon here is the console script (comm `kvm-watchdog`, as on
a host), beside a real QEMU VM under KVM (which brings the kernel's `kvm-pit/PID`
thread) and a real QEMU started by hand: only libvirt's guest counts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from harness.fixtures import Processes, StartDaemon, WriteConfig
from harness.procs import comm_of
from harness.sandbox import LibvirtSandbox
from harness.wait import wait_for

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 missing (scripts/install-deps)")


def scan_json(state_dir: Path) -> Dict[str, Any]:
    try:
        seen: Dict[str, Any] = json.loads((state_dir / "scan.json").read_text())
        return seen
    except (OSError, ValueError):
        return {}


def kernel_threads_named(prefix: str) -> List[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if comm_of(int(name)).startswith(prefix):
                    found.append(int(name))
            except OSError:
                pass
    return found


@pytest.fixture
def qemus() -> Iterator[Processes]:
    """Real QEMUs of this test's own, ended by pid at the end."""
    started: Processes = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def start_qemu(qemus: Processes, *extra: str) -> subprocess.Popen[bytes]:
    accel = "kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "tcg"
    argv = [
        str(QEMU),
        *extra,
        "-machine",
        f"pc,accel={accel}",
        "-m",
        "64",
        "-S",
        "-nodefaults",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "none",
    ]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    qemus.append(p)
    return p


def test_the_installed_daemon_counts_libvirts_guests_and_never_itself_nor_the_kernels_threads(
    libvirt: LibvirtSandbox, state_dir: Path, write_config: WriteConfig, start_daemon: StartDaemon, qemus: Processes
) -> None:
    guest = start_qemu(qemus, "-name", "guest=vm1,debug-threads=on")
    by_hand = start_qemu(qemus)
    wait_for(
        lambda: comm_of(guest.pid) == "qemu-system-x86" and comm_of(by_hand.pid) == "qemu-system-x86",
        30,
        "both QEMUs running",
    )
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        wait_for(lambda: kernel_threads_named(f"kvm-pit/{guest.pid}"), 30, "the kernel's kvm-pit thread for the VM")

    daemon = start_daemon(write_config(libvirt.config(state_dir, interval="1s", latency={"enabled": False})))
    wait_for(lambda: scan_json(state_dir).get("pid") == daemon.pid, 30, "the daemon's first scan")
    assert comm_of(daemon.pid) == "kvm-watchdog", "the daemon runs as installed: the console script"
    seen = scan_json(state_dir)
    assert seen["libvirt_running"] is True
    assert guest.pid in seen["guest_pids"] and by_hand.pid not in seen["guest_pids"], (
        f"only libvirt's guest (-name guest=...) counts; not a QEMU by hand: {seen}"
    )
    assert daemon.pid not in seen["guest_pids"], "nor the watchdog itself"
    kvm_threads = set(kernel_threads_named(f"kvm-pit/{guest.pid}") or [])
    assert not kvm_threads & set(seen["guest_pids"]), "nor the kernel's threads"

    # the last guest stops: the host is idle at the next scan, not at the next full walk minutes later
    guest.kill()
    guest.wait(10)
    scans = seen["scans"]
    wait_for(lambda: scan_json(state_dir).get("scans", 0) >= scans + 2, 30, "two more scans")
    assert guest.pid not in scan_json(state_dir)["guest_pids"]
