"""The KVM self-test's child: a few ioctls on /dev/kvm, one JSON line of what each answered.

A child process, so a kernel that hangs an ioctl hangs only this (the parent kills it at
its timeout, and does not wait on a process stuck in the kernel). Stdlib only.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import struct
import sys
from typing import Any, Dict, List

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_CHECK_EXTENSION = 0xAE03
KVM_CREATE_IRQCHIP = 0xAE60
KVM_CREATE_DEVICE = 0xC00CAEE0  # _IOWR(KVMIO, 0xe0, struct kvm_create_device): u32 type, u32 fd, u32 flags
KVM_CREATE_DEVICE_TEST = 1
KVM_DEV_TYPE_ARM_VGIC_V2 = 5
KVM_DEV_TYPE_ARM_VGIC_V3 = 7
KVM_CAP_ARM_PMU_V3 = 126


def _try(checks: List[Dict[str, Any]], name: str, fn: Any) -> Any:
    try:
        value = fn()
        checks.append({"name": name, "ok": True, "value": value})
        return value
    except OSError as exc:
        checks.append(
            {
                "name": name,
                "ok": False,
                "errno": errno.errorcode.get(exc.errno or 0, str(exc.errno)),
                "error": exc.strerror,
            }
        )
        return None


def run(path: str = "/dev/kvm") -> Dict[str, Any]:
    machine = platform.machine()
    checks: List[Dict[str, Any]] = []
    kvm = _try(checks, "open", lambda: os.open(path, os.O_RDWR | os.O_CLOEXEC))
    if kvm is None:
        return {"machine": machine, "checks": checks}
    _try(checks, "KVM_GET_API_VERSION", lambda: fcntl.ioctl(kvm, KVM_GET_API_VERSION, 0))
    vm = _try(checks, "KVM_CREATE_VM", lambda: fcntl.ioctl(kvm, KVM_CREATE_VM, 0))
    if vm is not None:
        if machine == "x86_64":
            _try(checks, "KVM_CREATE_IRQCHIP", lambda: fcntl.ioctl(vm, KVM_CREATE_IRQCHIP, 0))
        elif machine == "aarch64":
            for name, kind in (("vgic_v3", KVM_DEV_TYPE_ARM_VGIC_V3), ("vgic_v2", KVM_DEV_TYPE_ARM_VGIC_V2)):
                arg = struct.pack("III", kind, 0, KVM_CREATE_DEVICE_TEST)
                _try(
                    checks,
                    f"KVM_CREATE_DEVICE_TEST {name}",
                    lambda arg=arg: fcntl.ioctl(vm, KVM_CREATE_DEVICE, arg) and 0,
                )
            _try(checks, "KVM_CAP_ARM_PMU_V3", lambda: fcntl.ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_ARM_PMU_V3))
        os.close(vm)
    os.close(kvm)
    return {"machine": machine, "checks": checks}


if __name__ == "__main__":
    sys.stdout.write(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "/dev/kvm")) + "\n")
