"""The arm64 host's story, run as root inside the emulated arm64 KVM machine (harness/vm.py).

It installs the .deb, then records what the real arm64 KVM and the real libvirt and
qemu-system-aarch64 do, into results.json beside it; the test on the host side
(tests/test_arm64.py) judges the record. Every wait has a deadline; what happened is
recorded even when a step fails, so a failure says how far it got.

Usage (inside): python3 arm64_job.py JOBDIR
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.vm_job import Record, arm, journal
    from harness.wait import wait_for
else:  # the harness's own, copied beside this file
    from vm_job import Record, arm, journal
    from wait import wait_for

JOB = sys.argv[1] if len(sys.argv) > 1 else "/mnt/job"
WRAPPER = "/usr/local/bin/qemu-system-aarch64"  # before /usr/bin on libvirtd's PATH
CONFIG = "/etc/kvm-watchdog/config.yaml"
GICV2_DOMAIN = """<domain type='kvm'>
  <name>gicv2</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='aarch64' machine='virt'>hvm</type></os>
  <features><gic version='2'/></features>
  <cpu mode='host-passthrough'/>
  <devices><emulator>/usr/bin/qemu-system-aarch64</emulator></devices>
</domain>
"""
record = Record(JOB)
results = record.results
sh = record.sh


def main() -> None:
    results["uname"] = os.uname().machine + " " + os.uname().release
    results["dmesg_kvm"] = [
        line for line in sh("dmesg", check=False).stdout.splitlines() if "kvm" in line.lower() or "GIC" in line
    ]
    sh("dpkg -i " + " ".join(os.path.join(JOB, n) for n in os.listdir(JOB) if n.endswith("_all.deb")))
    sh(f"install -m 755 {JOB}/fake_qemu.py {WRAPPER} && echo none > {WRAPPER}.fault && chmod 666 {WRAPPER}.fault")
    sh(f"install -m 644 {JOB}/chdir_hang.so {WRAPPER}.hang.so")  # cross-compiled on the host (test_arm64.py)
    results["emulator"] = sh("/usr/bin/qemu-system-aarch64 --version").stdout.splitlines()[0]
    results["libvirt"] = sh("libvirtd --version").stdout.strip()

    # 1. the self-test against the real arm64 KVM
    diag = sh("kvm-watchdog diagnose --json", check=False, timeout=300)
    results["diagnose"] = (
        json.loads(diag.stdout) if diag.stdout.strip().startswith("{") else {"raw": diag.stdout, "err": diag.stderr}
    )
    record.save()

    # the service at its shipped config (hung after the shipped 60 s)
    sh("systemctl enable --now kvm-watchdog")
    wait_for(
        lambda: sh("systemctl is-active kvm-watchdog", check=False).stdout.strip() == "active",
        120,
        "kvm-watchdog active",
        poll=1.0,
    )
    # a healthy probe first: the cache filled
    sh("virsh -c qemu:///system domcapabilities --arch aarch64 > /dev/null", timeout=600)
    wait_for(lambda: os.path.exists("/var/lib/kvm-watchdog/scan.json"), 120, "a first scan", poll=1.0)

    # 2. a domain with <gic version='2'/>: the real qemu-system-aarch64 under KVM refuses to start it
    with open("/tmp/gicv2.xml", "w") as f:
        f.write(GICV2_DOMAIN)
    sh("virsh -c qemu:///system define /tmp/gicv2.xml", timeout=600)
    start = sh("virsh -c qemu:///system start gicv2", timeout=600, check=False)
    failed_at = time.time()
    results["vm_start"] = {"rc": start.returncode, "error": start.stderr.strip(), "failed_at": failed_at}
    record.save()
    opened = wait_for(
        lambda: journal(KVMWD_EVENT="vm_start_failed", KVMWD_STATE="open"), 120, "vm_start_failed", poll=0.2
    )
    results["vm_start_failed"] = opened[0]
    results["domain_log"] = sh("cat /var/log/libvirt/qemu/gicv2.log", check=False).stdout[-3000:]
    # from the moment QEMU wrote its line (its own timestamp in the domain log) to the journal event
    stamp = re.search(
        r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z qemu-system-aarch64: host does not support",
        results["domain_log"],
        re.M,
    )
    if stamp:
        written = (
            datetime.datetime.strptime(stamp.group(1), "%Y-%m-%dT%H:%M:%S.%f")
            .replace(tzinfo=datetime.timezone.utc)
            .timestamp()
        )
        results["vm_start_failed_latency_s"] = round(int(opened[0]["__REALTIME_TIMESTAMP"]) / 1e6 - written, 3)
    record.save()

    # 3. the real capability probe held at its chdir("/") by the LD_PRELOAD shim, as the incident's was
    arm(WRAPPER, "real-hang 1")
    asked = time.time()
    subprocess.Popen(
        [
            "/bin/sh",
            "-c",
            "virsh -c qemu:///system domcapabilities --arch aarch64 > /tmp/waiting.out 2>&1; echo $? > /tmp/waiting.rc",
        ],
        start_new_session=True,
    )
    hung = wait_for(lambda: journal(KVMWD_EVENT="probe_hung", KVMWD_STATE="open"), 300, "probe_hung", poll=0.5)
    results["probe_hung"] = hung[0]
    killed = wait_for(lambda: journal(KVMWD_EVENT="action", KVMWD_ACTION="kill_probe"), 120, "kill_probe", poll=0.5)
    results["kill_probe"] = killed[0]
    results["probe_asked_at"] = asked
    wait_for(lambda: journal(KVMWD_EVENT="probe_hung", KVMWD_STATE="resolved"), 120, "probe_hung resolved", poll=0.5)
    wait_for(lambda: os.path.exists("/tmp/waiting.rc"), 300, "the waiting virsh to return", poll=1.0)
    results["waiting_virsh_rc"] = open("/tmp/waiting.rc").read().strip()
    results["next_call_rc"] = sh(
        "virsh -c qemu:///system domcapabilities --arch aarch64 > /dev/null", timeout=600, check=False
    ).returncode


if __name__ == "__main__":
    record.run(main)
