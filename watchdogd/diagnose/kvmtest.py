"""The KVM self-test: can this kernel's KVM do what a guest's QEMU will ask of it?

The ioctls run in a child (diagnose.kvm_child) with a timeout: a kernel that hangs
one never hangs the watchdog (the child is killed and, if the kernel holds it in D
state, left unwaited). `decode` turns what the child saw into a verdict; it is pure,
so the aarch64 path, which cannot run on this x86_64 machine, is tested on recorded
answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..children import run_with_timeout

API_VERSION = 12  # KVM_GET_API_VERSION has answered 12 since Linux 2.6.22


@dataclass(frozen=True)
class KvmResult:
    usable: bool
    api_version: Optional[int]
    checks: List[Dict[str, Any]] = field(default_factory=list)
    problem: Optional[str] = None  # what makes it unusable, in words
    advice: List[str] = field(default_factory=list)  # what guests must do on this host (aarch64: gic-version=3)

    def to_json(self) -> Dict[str, Any]:
        return {
            "usable": self.usable,
            "api_version": self.api_version,
            "checks": self.checks,
            "problem": self.problem,
            "advice": self.advice,
        }


def decode(raw: Dict[str, Any]) -> KvmResult:
    """What the child's answers mean.

    >>> refused = {"name": "open", "ok": False, "errno": "ENOENT", "error": "No such file or directory"}
    >>> print(decode({"machine": "x86_64", "checks": [refused]}).problem)  # doctest: +NORMALIZE_WHITESPACE
    cannot open /dev/kvm: No such file or directory (ENOENT): no KVM on this host
    (module not loaded, or virtualization off in the firmware)
    """
    checks = list(raw.get("checks") or [])
    by = {c.get("name"): c for c in checks}
    machine = raw.get("machine", "?")
    opened = by.get("open", {})
    if not opened.get("ok"):
        why = f"{opened.get('error', 'unknown')} ({opened.get('errno', '?')})"
        return KvmResult(
            False,
            None,
            checks,
            f"cannot open /dev/kvm: {why}: no KVM on this host (module not loaded, or virtualization off in the "
            "firmware)",
        )
    api = by.get("KVM_GET_API_VERSION", {})
    version = api.get("value") if api.get("ok") else None
    if version != API_VERSION:
        return KvmResult(
            False,
            version,
            checks,
            f"/dev/kvm answers KVM_GET_API_VERSION with {version!r}, not {API_VERSION}: it is not KVM",
        )
    if not by.get("KVM_CREATE_VM", {}).get("ok"):
        vm = by.get("KVM_CREATE_VM", {})
        return KvmResult(
            False, version, checks, f"KVM_CREATE_VM failed: {vm.get('error')} ({vm.get('errno')}): no guest can start"
        )
    advice: List[str] = []
    if machine == "x86_64" and not by.get("KVM_CREATE_IRQCHIP", {}).get("ok"):
        c = by.get("KVM_CREATE_IRQCHIP", {})
        return KvmResult(
            False,
            version,
            checks,
            f"KVM_CREATE_IRQCHIP failed: {c.get('error')} ({c.get('errno')}): no in-kernel irqchip",
        )
    if machine == "aarch64":
        v3, v2 = by.get("KVM_CREATE_DEVICE_TEST vgic_v3", {}), by.get("KVM_CREATE_DEVICE_TEST vgic_v2", {})
        if not v3.get("ok") and not v2.get("ok"):
            return KvmResult(
                False,
                version,
                checks,
                "neither an in-kernel vGICv3 nor a vGICv2 can be made: no guest with an interrupt controller can start",
            )
        if not v2.get("ok"):
            advice.append(
                "no in-kernel GICv2 here: guests must use gic-version=3 (<gic version='3'/>); an explicit "
                "gic-version=2 fails to start"
            )
        pmu = by.get("KVM_CAP_ARM_PMU_V3", {})
        if not (pmu.get("ok") and pmu.get("value")):
            advice.append("no KVM_CAP_ARM_PMU_V3: guests must run with <pmu state='off'/>")
    return KvmResult(True, version, checks, None, advice)


def run_selftest(device: str = "/dev/kvm", timeout: float = 10.0, python: str = sys.executable) -> KvmResult:
    """Run the child; a child that does not answer in time is ended with its group and reported (never waited on past
    that)."""
    try:
        r = run_with_timeout([python, "-m", "watchdogd.diagnose.kvm_child", device], timeout, stderr=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return KvmResult(
            False,
            None,
            [],
            f"the KVM self-test did not finish within {timeout:g}s: the kernel's KVM hangs (the child was killed)",
        )
    except OSError as exc:
        return KvmResult(False, None, [], f"cannot run the KVM self-test: {exc.strerror or exc}")
    try:
        return decode(json.loads(r.stdout[:65536]))
    except ValueError:
        return KvmResult(False, None, [], f"the KVM self-test exited {r.returncode} without an answer")


def device_present(device: str = "/dev/kvm") -> bool:
    return os.path.exists(device)
