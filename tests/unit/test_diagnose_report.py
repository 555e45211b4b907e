"""The verdict `kvm-watchdog diagnose` leads with, decided from what it saw: the most serious cause first."""

from __future__ import annotations

from dataclasses import replace

from watchdogd.causes import Cause
from watchdogd.diagnose.kvmtest import KvmResult
from watchdogd.report.answer import ExitStatus
from watchdogd.report.diagnosis import DiagnoseReport, ProbeSeen, Said

HEALTHY = DiagnoseReport(KvmResult(True, 12), "6.1.0", "6.1.0", {}, (), (), (), (), ())
HUNG = ProbeSeen("/l/qmp-AAAAAA", 61.0, (7,), {"cause": "userspace_deadlock", "what_to_do": "roll back"}, True, None)
VGIC = Said("kvm_set_irq: no in-kernel GICv2", "no_in_kernel_vgic", "use gic-version=3", domain="vm1")
KERNEL = Said("INFO: task qemu:7 blocked for more than 120 seconds", "task_blocked_in_kernel", "reboot")


def test_a_healthy_host_says_so_and_exits_0() -> None:
    assert HEALTHY.verdict.cause is Cause.HEALTHY and HEALTHY.exit_status is ExitStatus.OK
    assert HEALTHY.to_json()["verdict"] == {"cause": "healthy", "what_to_do": []}


def test_an_unusable_kvm_comes_before_everything_and_cites_the_kernels_own_line() -> None:
    broken = replace(HEALTHY, kvm=KvmResult(False, None, problem="cannot open /dev/kvm"), probes=(HUNG,))
    broken = replace(broken, kernel_said=(KERNEL,))
    assert broken.verdict.cause is Cause.KVM_UNUSABLE and broken.exit_status is ExitStatus.CRITICAL
    assert broken.verdict.what_to_do[:2] == (
        "KVM is unusable: cannot open /dev/kvm",
        "the kernel said at boot: 'INFO: task qemu:7 blocked for more than 120 seconds' (task_blocked_in_kernel): "
        "reboot",
    )


def test_a_hung_probe_names_its_cause_then_a_domains_log_then_what_could_not_be_seen() -> None:
    assert replace(HEALTHY, probes=(HUNG,), signatures=(VGIC,)).verdict.cause == "userspace_deadlock"
    logs = replace(HEALTHY, signatures=(VGIC,), errors=("cannot read /var/log/libvirt/qemu",))
    assert logs.verdict.what_to_do == ("domain vm1: use gic-version=3",) and logs.exit_status is ExitStatus.CRITICAL
    noted = replace(HEALTHY, signatures=(replace(VGIC, alert=False),), errors=("cannot read the journal",))
    assert noted.verdict.cause is Cause.UNKNOWN and noted.exit_status is ExitStatus.UNKNOWN
