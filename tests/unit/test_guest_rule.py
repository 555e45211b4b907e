"""A guest is a guest, not a name: the one rule that tells libvirt's running guests (what keeps it from idling out).

Installed, the daemon runs as the console script, whose comm is `kvm-watchdog`; the
kernel runs threads named `kvm-pit/1234` and `kvm-nx-lpage-recovery` beside every VM.
Counted as guests, each kept the latency gate open and libvirtd up for good.
"""

from __future__ import annotations

from pathlib import Path
from typing import FrozenSet, Optional, Tuple

from watchdogd.emulators import PF_KTHREAD, is_emulator, why_not_guest
from watchdogd.model import Process
from watchdogd.observe.procfs import ProcFS
from watchdogd.safety import probe_arg_filter, why_not_member

NAMES = ("qemu", "kvm")
OWN = 500
GUEST_ARGV = ("-name", "guest=vm1,debug-threads=on")
MACHINE = ("machine.slice", "machine-qemu\\x2d1\\x2dvm1.scope", "libvirt", "emulator")
SERVICE = ("system.slice", "kvm-watchdog.service")


def proc(
    pid: int, comm: str, cmdline: Tuple[str, ...] = (), kthread: bool = False, ppid: int = 1, state: str = "S"
) -> Process:
    return Process(
        pid=pid, ppid=ppid, state=state, comm=comm, start_boot_s=10.0, uid=64055, cmdline=cmdline, kthread=kthread
    )


def guest(p: Process, cgroup: Optional[Tuple[str, ...]] = None, members: FrozenSet[int] = frozenset()) -> bool:
    return why_not_guest(p, NAMES, members, OWN, cgroup) is None


def test_the_watchdog_kernel_threads_and_interpreters_are_not_guests() -> None:
    assert not guest(proc(OWN, "kvm-watchdog", ("/usr/bin/python3", "/usr/bin/kvm-watchdog", "run"))), (
        "the daemon itself"
    )
    assert not guest(proc(777, "kvm-watchdog", ("/usr/bin/python3", "/usr/bin/kvm-watchdog", "check"))), (
        "a check from cron: no -name guest="
    )
    assert not guest(proc(777, "kvm-watchdog", GUEST_ARGV), SERVICE), (
        "where systemd runs, only machine.slice holds guests"
    )
    assert not guest(proc(501, "python3", GUEST_ARGV, ppid=OWN)), "the watchdog's own child (its latency probe)"
    assert not guest(proc(12, "kvm-pit/1234", kthread=True)) and not guest(
        proc(13, "kvm-nx-lpage-recovery", kthread=True)
    )
    assert not guest(proc(14, "python3", GUEST_ARGV)), "python3 is no emulator's name"
    assert not guest(proc(15, "myqemuish", GUEST_ARGV)), "a name is matched as a word, not a substring"


def test_a_qemu_started_by_libvirt_for_a_domain_is_a_guest() -> None:
    vm = proc(900, "qemu-system-x86", GUEST_ARGV)
    assert guest(vm), "without systemd: an emulator with libvirt's -name guest="
    assert guest(vm, MACHINE), "with systemd: and in machine.slice"
    assert not guest(vm, SERVICE)
    assert guest(proc(901, "qemu-kvm", GUEST_ARGV), MACHINE), "RHEL's /usr/libexec/qemu-kvm"
    assert not guest(proc(902, "qemu-system-x86", ())), (
        "a qemu started by hand is no domain of libvirt's: it keeps libvirt up no more than any process"
    )
    assert guest(proc(902, "qemu-system-x86", ()), MACHINE), (
        "where systemd runs, the kernel placed it in machine.slice: its command line is not needed (nor read)"
    )
    assert not guest(proc(903, "qemu-system-x86", GUEST_ARGV, state="Z")), "a zombie runs nothing"


def test_a_probes_members_are_not_guests() -> None:
    first = proc(1000, "qemu-system-x86", GUEST_ARGV)
    assert not guest(first, MACHINE, members=frozenset({1000}))


def test_the_same_word_rule_decides_probe_membership_and_zombies() -> None:
    d = "/var/lib/libvirt/qemu/qmp-BGQCH3"
    argv = ("-pidfile", d + "/qmp.pid")
    from watchdogd.safety import Protected

    nobody = Protected(OWN, frozenset())
    assert why_not_member(proc(20, "qemu-system-x86", argv), d, 0.0, 0.0, nobody, NAMES, 64055) is None
    assert "not an emulator's" in str(why_not_member(proc(21, "myqemuish", argv), d, 0.0, 0.0, nobody, NAMES, 64055))
    assert "kernel thread" in str(
        why_not_member(proc(22, "kvm-pit/1", argv, kthread=True), d, 0.0, 0.0, nobody, NAMES, 64055)
    )
    assert is_emulator(proc(23, "qemu-kvm", state="Z"), NAMES) and not is_emulator(
        proc(24, "kvm-pit/9", kthread=True), NAMES
    )


def _fake_proc(root: Path, pid: int, comm: str, flags: int, cmdline: bytes, cgroup: str) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "stat").write_text(f"{pid} ({comm}) S 1 {pid} {pid} 0 -1 {flags} 0 0 0 0 0 0 0 0 20 0 1 0 500 0 0\n")
    (d / "cmdline").write_bytes(cmdline)
    (d / "cgroup").write_text(cgroup)


def test_the_process_table_never_reads_a_kernel_threads_cmdline_and_keeps_a_guests_name(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 2, "kvm-pit/1234", PF_KTHREAD | 0x40, b"", "0::/\n")
    argv = b"/usr/bin/qemu-system-x86_64\0-name\0guest=vm1,debug-threads=on\0-S\0-m\x001024\0"
    _fake_proc(
        tmp_path,
        900,
        "qemu-system-x86",
        0x400100,
        argv,
        "0::/machine.slice/machine-qemu\\x2d1\\x2dvm1.scope/libvirt/emulator\n",
    )
    table = ProcFS(str(tmp_path), keep_arg=probe_arg_filter(["/var/lib/libvirt/qemu"]), systemd=True).scan(
        lambda comm: "kvm" in comm or "qemu" in comm
    )
    assert set(table) == {900}, "the kernel's kvm-pit thread is never in the table"
    assert table[900].cmdline == ("-name", "guest=vm1,debug-threads=on"), (
        "only what tells a guest (or names a probe dir) is kept"
    )
    cgroup = ProcFS(str(tmp_path), systemd=True).cgroup(900)
    assert cgroup is not None and guest(table[900], cgroup)


def test_guests_are_found_where_the_kernel_placed_them_in_every_cgroup_layout(tmp_path: Path) -> None:
    """cgroup v1's name=systemd tree (Kylin V10), the hybrid unified tree, and v2: the slice's pids, nested scopes
    included; no tree, no answer (the full walk finds them)."""
    from watchdogd.observe.cgroupfs import slice_pids

    for tree in ("systemd", "unified", ""):
        root = tmp_path / (tree or "v2")
        scope = root / tree / "machine.slice" / "machine-qemu\\x2d1\\x2dvm1.scope"
        (scope / "libvirt" / "emulator").mkdir(parents=True)
        (root / tree / "machine.slice" / "cgroup.procs").write_text("")
        (scope / "cgroup.procs").write_text("")
        (scope / "libvirt" / "cgroup.procs").write_text("4242\n")
        (scope / "libvirt" / "emulator" / "cgroup.procs").write_text("4243\n4244\n")
        assert slice_pids("machine.slice", str(root)) == {4242, 4243, 4244}, tree
    assert slice_pids("machine.slice", str(tmp_path / "none")) is None
