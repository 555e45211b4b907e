"""Classification and the KVM self-test's decoding, on recorded captures and answers (the aarch64 path cannot run here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence

from watchdogd.diagnose.classify import classify
from watchdogd.diagnose.kvmtest import decode
from watchdogd.model import PidfileRead, Probe, ProbeMember, Process, Role
from watchdogd.observe.capture import Capture, ProcessCapture, ThreadState


def probe(first_alive: bool) -> Probe:
    members = [ProbeMember(Process(30, 1, "S", "qemu-system-x86", 0.0, uid=0), Role.DAEMON)]
    if first_alive:
        members.append(ProbeMember(Process(10, 5, "S", "qemu-system-x86", 0.0, uid=0), Role.FIRST))
        members.append(ProbeMember(Process(20, 10, "Z", "qemu-system-x86", 0.0, uid=0), Role.INTERMEDIATE))
    return Probe("/l/qmp-AAAAAA", 0.0, 100.0, PidfileRead(30), tuple(members))


def daemon(*threads: ThreadState, kvm_fds: Sequence[int] = ()) -> ProcessCapture:
    return ProcessCapture(30, "daemon", tuple(threads), tuple(kvm_fds), len(threads))


def first() -> ProcessCapture:
    return ProcessCapture(10, "first", (ThreadState(10, "S", "anon_pipe_read", "read", 5),), (), 1)


def test_the_incident_a_futex_before_ready_is_a_userspace_deadlock() -> None:
    cap = Capture(
        "/l/qmp-AAAAAA",
        "x86_64",
        (first(), daemon(ThreadState(30, "S", "futex_do_wait", "futex"), ThreadState(31, "S", None, "ppoll"))),
    )
    d = classify(probe(first_alive=True), cap)
    assert (d.stage, d.blocked_in, d.cause) == ("before_ready", "futex", "userspace_deadlock")


def test_a_thread_in_an_ioctl_on_a_kvm_fd_is_the_kernels_kvm() -> None:
    cap = Capture(
        "/l/qmp-AAAAAA",
        "x86_64",
        (
            first(),
            daemon(
                ThreadState(30, "S", None, "futex"),
                ThreadState(32, "S", "kvm_vcpu_block", "ioctl", 14),
                kvm_fds=(11, 14),
            ),
        ),
    )
    d = classify(probe(first_alive=True), cap)
    assert d.cause == "kvm_ioctl" and "KVM fd 14" in d.detail


def test_an_ioctl_on_another_fd_is_not_kvms() -> None:
    cap = Capture("/l/qmp-AAAAAA", "x86_64", (first(), daemon(ThreadState(30, "S", None, "ioctl", 3), kvm_fds=(11,))))
    assert classify(probe(first_alive=True), cap).cause == "unknown"


def test_d_state_is_uninterruptible_whatever_else_is_seen() -> None:
    cap = Capture(
        "/l/qmp-AAAAAA",
        "aarch64",
        (daemon(ThreadState(30, "D", "kvm_arch_vcpu_ioctl_run", "ioctl", 14), kvm_fds=(14,)),),
    )
    d = classify(probe(first_alive=False), cap)
    assert d.cause == "uninterruptible" and "reboot" in d.what_to_do and "kvm_arch_vcpu_ioctl_run" in d.detail


def test_after_ready_the_qmp_session_never_completed() -> None:
    cap = Capture("/l/qmp-AAAAAA", "x86_64", (daemon(ThreadState(30, "S", None, "ppoll")),))
    d = classify(probe(first_alive=False), cap)
    assert (d.stage, d.blocked_in, d.cause) == ("after_ready", "ppoll", "qmp_unanswered")


def test_without_a_capture_the_stage_is_still_told() -> None:
    d = classify(probe(first_alive=True), Capture("/l/qmp-AAAAAA", "x86_64", ()))
    assert d.stage == "before_ready" and d.cause == "unknown" and d.blocked_in is None


def _answers(*checks: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "machine": "aarch64",
        "checks": [
            {"name": "open", "ok": True, "value": 3},
            {"name": "KVM_GET_API_VERSION", "ok": True, "value": 12},
            {"name": "KVM_CREATE_VM", "ok": True, "value": 4},
            *checks,
        ],
    }


def test_aarch64_a_gicv3_host_without_gicv2_compatibility_says_guests_need_gic_version_3() -> None:
    r = decode(
        _answers(
            {"name": "KVM_CREATE_DEVICE_TEST vgic_v3", "ok": True, "value": 0},
            {"name": "KVM_CREATE_DEVICE_TEST vgic_v2", "ok": False, "errno": "ENODEV", "error": "No such device"},
            {"name": "KVM_CAP_ARM_PMU_V3", "ok": True, "value": 1},
        )
    )
    assert r.usable and r.api_version == 12
    assert r.advice == [
        "no in-kernel GICv2 here: guests must use gic-version=3 (<gic version='3'/>); an explicit gic-version=2 fails to start"
    ]


def test_aarch64_no_vgic_at_all_is_unusable_and_no_pmu_is_advice() -> None:
    r = decode(
        _answers(
            {"name": "KVM_CREATE_DEVICE_TEST vgic_v3", "ok": False, "errno": "ENODEV", "error": "No such device"},
            {"name": "KVM_CREATE_DEVICE_TEST vgic_v2", "ok": False, "errno": "ENODEV", "error": "No such device"},
        )
    )
    assert not r.usable and "neither an in-kernel vGICv3 nor a vGICv2" in (r.problem or "")
    ok = decode(
        _answers(
            {"name": "KVM_CREATE_DEVICE_TEST vgic_v3", "ok": True, "value": 0},
            {"name": "KVM_CREATE_DEVICE_TEST vgic_v2", "ok": True, "value": 0},
            {"name": "KVM_CAP_ARM_PMU_V3", "ok": True, "value": 0},
        )
    )
    assert ok.usable and ok.advice == ["no KVM_CAP_ARM_PMU_V3: guests must run with <pmu state='off'/>"]


def test_a_device_that_is_not_kvm_is_unusable() -> None:
    r = decode(
        {
            "machine": "x86_64",
            "checks": [
                {"name": "open", "ok": True, "value": 3},
                {
                    "name": "KVM_GET_API_VERSION",
                    "ok": False,
                    "errno": "ENOTTY",
                    "error": "Inappropriate ioctl for device",
                },
            ],
        }
    )
    assert not r.usable and "not KVM" in (r.problem or "")


def test_a_probe_held_by_sigstop_or_a_debugger_is_held_whatever_it_sits_in() -> None:
    import dataclasses

    cap = Capture("/l/qmp-AAAAAA", "x86_64", (first(), daemon(ThreadState(30, "S", "futex_do_wait", "futex"))))
    held = dataclasses.replace(probe(first_alive=True), held="first process 10 is stopped (state T)")
    d = classify(held, cap)
    assert (d.stage, d.blocked_in, d.cause) == (
        "before_ready",
        "futex",
        "held",
    ) and d.detail == "first process 10 is stopped (state T)"
    assert "never counts toward a libvirt restart" in d.what_to_do


def test_a_capture_reads_at_most_its_caps_of_members_and_threads_and_a_probe_past_the_scans_budget_is_not_captured(
    tmp_path: Path,
) -> None:
    from watchdogd.observe.capture import MAX_MEMBERS, MAX_THREADS, Capturer

    root = tmp_path / "proc"
    members = []
    for pid in range(100, 120):
        for tid in [pid] + list(range(pid * 1000, pid * 1000 + 100)):
            t = root / str(pid) / "task" / str(tid)
            t.mkdir(parents=True)
            (t / "stat").write_text(f"{tid} (qemu-system-x86) S 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1 0 1 0\n")
            (t / "syscall").write_text("202 0x0 0x0\n")
        (root / str(pid) / "fd").mkdir()
        members.append(ProbeMember(Process(pid, 1, "S", "qemu-system-x86", 0.0, uid=0), Role.UNKNOWN))
    flood = Probe("/l/qmp-AAAAAA", 0.0, 100.0, PidfileRead(None), tuple(members))
    # the caps alone, whatever the machine's speed: the time budget (CAPTURE_BUDGET_S) is out of this test
    cap = Capturer(str(root), "x86_64").capture(flood, budget=3600.0)
    assert len(cap.processes) == MAX_MEMBERS and all(len(p.threads) == MAX_THREADS for p in cap.processes)
    assert all(p.threads[0].tid == p.pid for p in cap.processes), "the main thread first, whatever the cap drops"
    assert Capturer.skipped(flood).processes == ()


def test_the_emulators_package_is_asked_only_for_a_root_owned_binary_in_a_system_dir(tmp_path: Path) -> None:
    import os

    from watchdogd.diagnose.packages import worth_asking

    placed = tmp_path / "qemu-system-x86_64"
    placed.write_text("")
    os.chown(placed, 65534, 65534)
    assert worth_asking("/usr/bin/python3", os.stat("/usr/bin/python3"))
    assert not worth_asking(str(placed), os.stat(placed)), "one the qemu user placed: never a dpkg-query in the loop"
    assert not worth_asking("/usr/bin/python3", os.stat(placed)), "owned by another uid, even in a system dir"


def test_each_qemus_words_for_a_missing_in_kernel_gicv2_are_one_cause() -> None:
    """QEMU 4.1 (the incident's qemu-kvm) and QEMU 7.2 (seen under the real arm64 KVM of make matrix) say it differently."""
    from watchdogd.diagnose.signatures import SHIPPED, load_table, match

    table = load_table(SHIPPED)
    lines = [
        "qemu-kvm: PMU: KVM_SET_DEVICE_ATTR: Invalid argument",
        "2026-12-02T17:41:34.795397Z qemu-system-aarch64: host does not support in-kernel GICv2 emulation",
    ]
    assert [m.signature.cause for m in match(lines, table)] == ["no_in_kernel_vgic", "no_in_kernel_vgic"]
