"""A booted host of the table (harness/hosts.py) for the host stories: the container, the package in it, its journal.

What every story on a booted host does the same way: install the package as an operator does (and the
fault-injecting emulator before the real one on the daemon's PATH), read the watchdog's journal events, and
set the emulator's fault so libvirt probes again.
"""

from __future__ import annotations

import json
from typing import Dict, List

from .hosts import Host
from .nspawn import Container
from .wait import wait_for


class Box(Container):
    """A booted host of the table: the container, and what the table says of it."""

    host: Host


def install(box: Box) -> None:
    """The package as an operator installs it (apt, its Depends from the distro), and the fault-injecting emulator."""
    box.run("apt-get install -y -q --no-install-recommends /mnt/pkg/kvm-watchdog_*_all.deb", check=True, timeout=300)
    fake = box.host.emulator_wrapper  # before /usr/bin on the daemon's PATH
    box.run(
        f"install -m 755 /mnt/harness/fake_qemu.py {fake} && echo none > {fake}.fault && chmod 666 {fake}.fault",
        check=True,
    )
    assert box.run("virsh -c qemu:///system domcapabilities >/dev/null", timeout=120).returncode == 0, (
        "a healthy libvirt to start from"
    )


def journal(box: Box, *matches: str) -> List[Dict[str, str]]:
    out = box.run("journalctl --no-pager -o json -u kvm-watchdog " + " ".join(matches)).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def events(box: Box, kind: str, **fields: str) -> List[Dict[str, str]]:
    return [e for e in journal(box, f"KVMWD_EVENT={kind}") if all(e.get(k) == v for k, v in fields.items())]


def main_pid(box: Box) -> int:
    return int(box.run("systemctl show -p MainPID --value kvm-watchdog").stdout.strip() or 0)


def arm(box: Box, mode: str) -> None:
    """Set the fault and make libvirt re-probe (it compares the binary's ctime in whole seconds)."""
    fake = box.host.emulator_wrapper
    box.run(f"echo '{mode}' > {fake}.fault", check=True)
    before = box.run(f"stat -c %Z {fake}").stdout.strip()
    wait_for(
        lambda: box.run(f"chmod 755 {fake} && stat -c %Z {fake}").stdout.strip() != before,
        5,
        "a new ctime second",
        poll=0.1,
    )
