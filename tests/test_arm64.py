"""The incident's host class, for real: an arm64 KVM host whose GICv3 has no GICv2 compatibility.

An emulated arm64 machine (qemu-system-aarch64 -M virt,virtualization=on,gic-version=3,
TCG): its kernel runs KVM at EL2 and disables GICv2 emulation, as the Kunpeng 920 of
shared/seed/INCIDENT.md did. Inside, the .deb is installed and harness/arm64_job.py
records what happens (the job runs at boot and the machine powers off); this test
judges the record:
- `kvm-watchdog diagnose --json` against the real arm64 KVM: vGICv3 usable, vGICv2
  refused (ENODEV), and a verdict that guests must use gic-version=3;
- a domain with <gic version='2'/>, started by the real libvirt with the real
  qemu-system-aarch64 under KVM, fails, and the daemon opens vm_start_failed with
  cause no_in_kernel_vgic, naming gic-version;
- the real qemu-system-aarch64 capability probe, held at chdir("/") by the LD_PRELOAD
  shim (cross-compiled here: the image carries no compiler), is diagnosed before_ready / futex / userspace_deadlock by
  the aarch64 syscall table, and ended at its deadline.
`make matrix` runs it (about 5 minutes with the image cached; building the image, once, about 5 more).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict

import pytest
from harness.hosts import HOSTS
from harness.vm import Machine, ensure_image

HOST = HOSTS["bookworm-arm64"]
CROSS_GCC = "aarch64-linux-gnu-gcc"
HARNESS = Path(__file__).resolve().parent / "harness"
REPO = HARNESS.parent.parent

pytestmark = [
    pytest.mark.xdist_group(
        "arm64"
    ),  # one boot for the module's tests: one worker (make matrix runs hosts side by side)
    pytest.mark.matrix,
    pytest.mark.skipif(
        not all(shutil.which(tool) for tool in ("qemu-system-aarch64", "mmdebstrap", CROSS_GCC)),
        reason="qemu-system-arm, mmdebstrap or gcc-aarch64-linux-gnu missing (scripts/install-deps)",
    ),
]


Record = Dict[str, Any]  # what the job recorded (results.json), with the run's own figures


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Record:
    """Boot the arm64 host once, run the job, and return what it recorded (results.json)."""
    machine = Machine(HOST, ensure_image(HOST), tmp_path_factory.mktemp("arm64"))
    r = subprocess.run(
        [str(REPO / "scripts" / "build-deb"), str(machine.job)], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    shim = [
        CROSS_GCC,
        "-shared",
        "-fPIC",
        "-O2",
        "-o",
        str(machine.job / "chdir_hang.so"),
        str(HARNESS / "chdir_hang.c"),
    ]
    subprocess.run([*shim, "-ldl"], check=True, timeout=120)
    seen = machine.run_recorded("arm64_job.py", ("vm_job.py", "wait.py", "fake_qemu.py"), 2400)
    if os.environ.get("KVMWD_ARM64_RESULTS"):  # make matrix: the figures committed beside this test
        Path(os.environ["KVMWD_ARM64_RESULTS"]).write_text(json.dumps(summary(seen), indent=1) + "\n")
    return seen


def summary(seen: Record) -> Dict[str, Any]:
    """The figures the closing note and the README quote, committed beside this test."""
    diag = seen.get("diagnose", {}).get("kvm", {})
    checks = {c["name"]: c for c in diag.get("checks", [])}
    hung = seen.get("probe_hung", {})
    evidence = json.loads(hung["KVMWD_EVIDENCE"]) if hung.get("KVMWD_EVIDENCE") else {}
    return {
        "host": seen.get("uname"),
        "emulator": seen.get("emulator"),
        "libvirt": seen.get("libvirt"),
        "kernel_said": [line for line in seen.get("dmesg_kvm", []) if "kvm [" in line],
        "selftest": {
            name: {k: v for k, v in c.items() if k in ("ok", "value", "errno", "error")} for name, c in checks.items()
        },
        "advice": diag.get("advice"),
        "vm_start_error": seen.get("vm_start", {}).get("error"),
        "vm_start_failed_cause": json.loads(seen["vm_start_failed"]["KVMWD_EVIDENCE"])["diagnosis"].get("cause")
        if seen.get("vm_start_failed")
        else None,
        "vm_start_failed_latency_s": seen.get("vm_start_failed_latency_s"),
        "probe_diagnosis": {k: evidence.get("diagnosis", {}).get(k) for k in ("stage", "blocked_in", "cause")},
        "probe_hung_after_s": round(int(hung["__REALTIME_TIMESTAMP"]) / 1e6 - seen["probe_asked_at"], 1)
        if hung
        else None,
        "probe_ended_after_s": round(int(seen["kill_probe"]["__REALTIME_TIMESTAMP"]) / 1e6 - seen["probe_asked_at"], 1)
        if seen.get("kill_probe")
        else None,
        "boot_and_job_s": seen.get("boot_and_job_s"),
    }


def answer(check: Dict[str, Any]) -> str:
    """A check's answer as the host table spells it: its value where it answers one, "ok" where it only succeeds, its errno where it fails."""
    if not check["ok"]:
        return str(check["errno"])
    return "ok" if check.get("value") in (0, None) else str(check["value"])


def test_on_a_gicv3_only_arm64_host_the_self_test_says_guests_must_use_gic_version_3(record: Record) -> None:
    kvm = record["diagnose"]["kvm"]
    checks = {c["name"]: c for c in kvm["checks"]}
    assert any("disabling GICv2 emulation" in line for line in record["dmesg_kvm"]), record["dmesg_kvm"]
    assert kvm["usable"] is True, kvm
    answered = {name: answer(checks[name]) for name in HOST.expected_selftest if name in checks}
    assert answered == HOST.expected_selftest, f"the host table expects {HOST.expected_selftest}"
    assert any("gic-version=3" in step for step in kvm["advice"]), kvm["advice"]
    assert any("gic-version=3" in step for step in record["diagnose"]["verdict"]["what_to_do"]), record["diagnose"][
        "verdict"
    ]
    said = record["diagnose"]["kernel"]["said"]
    assert any("disabling GICv2 emulation" in k["line"] and k["cause"] == "no_in_kernel_vgic" for k in said), said
    assert any(
        "the kernel said at boot" in step and "GICv2" in step for step in record["diagnose"]["verdict"]["what_to_do"]
    ), "the kernel's own line cited as evidence"


def test_a_domain_with_gic_version_2_fails_to_start_and_the_watchdog_says_why(record: Record) -> None:
    assert record["vm_start"]["rc"] != 0, record["vm_start"]
    opened = record["vm_start_failed"]
    evidence = json.loads(opened["KVMWD_EVIDENCE"])
    assert opened["KVMWD_SUBJECT"] == "gicv2" or "gicv2" in opened["MESSAGE"], opened
    assert evidence["diagnosis"]["cause"] == "no_in_kernel_vgic", evidence
    assert "gic-version" in opened["MESSAGE"], opened["MESSAGE"]
    assert record["vm_start_failed_latency_s"] is not None, (
        "timed from QEMU's own line (a figure for arm64-results.json, not a bound)"
    )


def test_the_real_aarch64_probe_held_at_its_chdir_is_diagnosed_as_the_incidents_and_ended(record: Record) -> None:
    hung = record["probe_hung"]
    diagnosis = json.loads(hung["KVMWD_EVIDENCE"])["diagnosis"]
    assert (diagnosis["stage"], diagnosis["blocked_in"], diagnosis["cause"]) == (
        "before_ready",
        "futex",
        "userspace_deadlock",
    ), diagnosis
    assert record["kill_probe"]["KVMWD_RESULT"] == "ok", record["kill_probe"]["MESSAGE"]
    assert record["next_call_rc"] == 0, "capabilities work again after the kill"
    assert record.get("done"), record.get("journal_tail")
