"""Diagnosis: why the probe hung and what to do, shown on the real QEMU, the real libvirt and the real /dev/kvm.

The incident, replayed by the real qemu-system-x86_64 (an LD_PRELOAD shim stops its
daemon at chdir("/"), where the incident's daemon hung), must be told as a userspace
deadlock before it is killed; a VM whose QEMU prints the incident's arm64 lines must
be told as a missing in-kernel vGIC, with gic-version in what to do.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, Dict, Optional

import pytest
from harness.cli import REPO, run_cli
from harness.fixtures import StartDaemon, WriteConfig
from harness.journald import Journald, read_journal
from harness.sandbox import LibvirtSandbox, state_of
from harness.service import command
from harness.wait import wait_for

DOMAIN = "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os></domain>"


def test_the_real_qemu_hung_at_chdir_is_a_userspace_deadlock_before_ready_told_before_the_kill(
    journald: Journald, libvirt: LibvirtSandbox, state_dir: Path, write_config: WriteConfig, start_daemon: StartDaemon
) -> None:
    libvirt.build_hang_shim()
    daemon = start_daemon(write_config(libvirt.daemon_config(state_dir)))
    daemon.wait_journal("started")
    libvirt.hang("real-hang", count=1)
    [opened] = daemon.wait_journal("probe_hung", timeout=60, KVMWD_STATE="open")
    evidence = json.loads(opened["KVMWD_EVIDENCE"])
    assert evidence["diagnosis"]["stage"] == "before_ready"
    assert evidence["diagnosis"]["blocked_in"] == "futex"
    assert evidence["diagnosis"]["cause"] == "userspace_deadlock"
    assert "deadlocked in itself right after daemonizing" in opened["MESSAGE"]
    assert any(p["comm"].startswith("qemu-system") for p in evidence["processes"]), "the real emulator, not the fake"
    [kill] = daemon.wait_journal("action", timeout=30, KVMWD_ACTION="kill_probe")
    assert int(kill["__REALTIME_TIMESTAMP"]) >= int(opened["__REALTIME_TIMESTAMP"]), "told before it was killed"
    [bundle] = list((state_dir / "incidents").glob("*.json"))
    kept = json.loads(bundle.read_text())
    assert kept["diagnosis"]["cause"] == "userspace_deadlock" and kept["capture"]["processes"]
    daemon_thread = [
        t for p in kept["capture"]["processes"] if p["role"] == "daemon" for t in p["threads"] if t["tid"] == p["pid"]
    ]
    assert daemon_thread and daemon_thread[0]["syscall"] == "futex"
    assert kept["packages"] and any("qemu-system" in (v or "") for v in kept["packages"].values()), (
        "the emulator's package version"
    )


def test_a_daemon_that_never_answers_qmp_is_after_ready(
    journald: Journald, libvirt: LibvirtSandbox, state_dir: Path, write_config: WriteConfig, start_daemon: StartDaemon
) -> None:
    daemon = start_daemon(
        write_config(libvirt.daemon_config(state_dir, policies=[{"name": "tell", "on": "probe_hung", "do": ["alert"]}]))
    )
    daemon.wait_journal("started")
    libvirt.hang("hang-qmp", count=1)
    [opened] = daemon.wait_journal("probe_hung", timeout=60, KVMWD_STATE="open")
    diagnosis = json.loads(opened["KVMWD_EVIDENCE"])["diagnosis"]
    assert diagnosis["stage"] == "after_ready" and diagnosis["cause"] == "qmp_unanswered"
    assert diagnosis["blocked_in"] in ("accept", "accept4"), "the fake daemon sits in accept() on its QMP socket"


@pytest.mark.parametrize(
    "fault, line",
    [("pmu", "PMU: KVM_SET_DEVICE_ATTR: Invalid argument"), ("irq", "kvm_set_irq: No such device or address")],
)
def test_a_vm_that_aborts_with_the_incidents_lines_is_a_missing_in_kernel_vgic(
    journald: Journald,
    libvirt: LibvirtSandbox,
    state_dir: Path,
    write_config: WriteConfig,
    start_daemon: StartDaemon,
    fault: str,
    line: str,
) -> None:
    name = f"t-{fault}"
    xml = state_dir / f"{name}.xml"
    xml.write_text(DOMAIN.format(name=name))
    assert libvirt.virsh("define", str(xml)).returncode == 0
    try:
        # a full scan every 30 s: the failure is told from inotify on the log dir, not by the scan
        daemon = start_daemon(write_config(libvirt.daemon_config(state_dir, interval="30s")))
        daemon.wait_journal("started")
        # the logs already there at its first scan are history: the VM fails after that
        wait_for((state_dir / "scan.json").exists, 30, "the daemon's first scan")
        libvirt.vm_fault(fault)
        started = libvirt.virsh("start", name)
        assert started.returncode != 0, "the VM start fails"
        log = libvirt.log_dir / f"{name}.log"
        written = log.stat().st_mtime
        [failed] = daemon.wait_journal("vm_start_failed", timeout=30, KVMWD_STATE="open")
        assert failed["KVMWD_SUBJECT"] == name
        evidence = json.loads(failed["KVMWD_EVIDENCE"])
        assert evidence["diagnosis"]["cause"] == "no_in_kernel_vgic" and "gic-version" in failed["MESSAGE"]
        assert any(line in ln for ln in evidence["lines"]) and evidence["log"] == str(log)
        assert int(failed["__REALTIME_TIMESTAMP"]) / 1e6 - written < 1, (
            "within 1 s of the log line, whatever the interval"
        )
        assert not [e for e in daemon.journal_events("vm_start_failed") if "dirty_log" in e["MESSAGE"]], (
            "the dirty-log fallback is noted, never alerted"
        )
        libvirt.vm_fault("")  # the next start is clean (the real emulator): the finding resolves
        assert libvirt.virsh("start", name).returncode == 0
        daemon.wait_journal("vm_start_failed", timeout=30, KVMWD_STATE="resolved")
    finally:
        libvirt.virsh("destroy", name)
        libvirt.virsh("undefine", name)
        (libvirt.log_dir / f"{name}.log").unlink(missing_ok=True)  # the next tests' diagnose reads the logs' tails


def test_diagnose_says_kvm_is_usable_here(state_dir: Path, write_config: WriteConfig, libvirt: LibvirtSandbox) -> None:
    r = run_cli("-c", write_config(libvirt.config(state_dir, latency={"enabled": False})), "diagnose", "--json")
    report = r.json
    assert set(report) >= {"kvm", "kernel", "probes", "signatures", "incidents", "verdict"}
    assert report["kvm"]["usable"] is True and report["kvm"]["api_version"] == 12
    assert report["verdict"]["cause"] == "healthy" and r.rc == 0
    human = run_cli("-c", write_config(libvirt.config(state_dir, latency={"enabled": False})), "diagnose")
    assert human.out.startswith("VERDICT: healthy") and "KVM: usable; API version 12" in human.out


def test_diagnose_cites_only_the_kernels_own_lines_never_one_a_process_wrote_to_kmsg(
    journald: Journald, state_dir: Path, write_config: WriteConfig, libvirt: LibvirtSandbox
) -> None:
    """A line written to /dev/kmsg lands in the journal's kernel transport too, word for word a kernel signature's,
    but with facility 1 (user): a root process saying the arm64 GICv2 line there is not the kernel saying it."""
    tag = uuid.uuid4().hex
    with open("/dev/kmsg", "w") as kmsg:
        kmsg.write(f"<2>kvm [1]: disabling GICv2 emulation (written by a test, {tag})\n")
    [entry] = wait_for(
        lambda: [e for e in read_journal("_TRANSPORT=kernel") if tag in e.get("MESSAGE", "")],
        30,
        "the written line in the kernel transport",
    )
    assert entry["SYSLOG_FACILITY"] == "1", entry
    report = run_cli("-c", write_config(libvirt.config(state_dir, latency={"enabled": False})), "diagnose", "--json")
    said = report.json["kernel"]["said"]
    assert isinstance(said, list) and not [k for k in said if "written by a test" in k["line"]], said
    assert entry["MESSAGE"].startswith("kvm [1]: disabling GICv2 emulation"), "what the kernel table matches"
    assert report.json["verdict"]["cause"] == "healthy" and not any(
        tag in step for step in report.json["verdict"]["what_to_do"]
    )


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare (util-linux)")
def test_diagnose_says_kvm_is_unusable_and_exits_2_when_dev_kvm_is_masked(
    state_dir: Path, write_config: WriteConfig, libvirt: LibvirtSandbox
) -> None:
    cfg = write_config(libvirt.config(state_dir, latency={"enabled": False}))
    script = f"mount --bind /dev/null /dev/kvm && exec {command()} -c {cfg} diagnose --json"
    r = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(REPO),
    )
    assert r.returncode == 2, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["kvm"]["usable"] is False and report["verdict"]["cause"] == "kvm_unusable"
    assert (
        "not KVM" in report["kvm"]["problem"]
        or "cannot open" in report["kvm"]["problem"]
        or "KVM_" in report["kvm"]["problem"]
    )


def test_a_broken_signature_table_is_a_config_error_with_its_row(tmp_path: Path) -> None:
    table = tmp_path / "sigs.yaml"
    table.write_text("signatures:\n  - match: '('\n    cause: x\n    what_to_do: y\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"state_dir: {tmp_path}/state\ndiagnose:\n  signatures: {table}\n")
    r = run_cli("config", "check", str(cfg))
    assert r.rc == 2 and "diagnose.signatures" in r.err and "signatures[0]: not a valid regex" in r.err, r.err


def test_an_operators_signature_row_is_tried_first(tmp_path: Path) -> None:
    from watchdogd.diagnose.signatures import load, match

    table = tmp_path / "sigs.yaml"
    table.write_text(
        "signatures:\n  - match: 'failed to set irq'\n    cause: site_specific\n    what_to_do: call the on-call\n"
    )
    [found] = match(["qemu: failed to set irq for PMU"], load(str(table)))
    assert found.signature.cause == "site_specific"


class HungTaskTimeout:
    """The kernel's hung-task watchdog, made to speak after `seconds` rather than 120 while the story runs; its
    settings (and the warnings left this boot) are put back after. Never where a hung task panics the host."""

    FILES = ("hung_task_timeout_secs", "hung_task_warnings")

    def __init__(self, seconds: int):
        self.seconds = seconds
        self.saved: Dict[str, str] = {}

    @staticmethod
    def usable() -> bool:
        knobs = Path("/proc/sys/kernel")
        return (knobs / "hung_task_timeout_secs").exists() and (knobs / "hung_task_panic").read_text().strip() == "0"

    def __enter__(self) -> HungTaskTimeout:
        for name in self.FILES:
            self.saved[name] = (Path("/proc/sys/kernel") / name).read_text().strip()
        Path("/proc/sys/kernel/hung_task_warnings").write_text("10\n")
        Path("/proc/sys/kernel/hung_task_timeout_secs").write_text(f"{self.seconds}\n")
        return self

    def __exit__(self, *exc: object) -> None:
        for name, value in self.saved.items():
            (Path("/proc/sys/kernel") / name).write_text(value + "\n")


@pytest.mark.skipif(not HungTaskTimeout.usable(), reason="no hung-task watchdog here, or one that panics the host")
def test_a_probe_the_kernel_holds_past_sigkill_is_told_with_the_kernels_own_hung_task_line(
    journald: Journald,
    own_libvirt: LibvirtSandbox,
    state_dir: Path,
    write_config: WriteConfig,
    start_daemon: StartDaemon,
) -> None:
    """A probe's daemon reads a file whose FUSE server never answers; the watchdog's kill leaves it in D state, which
    SIGKILL cannot end, and the kernel's hung-task watchdog names it: that line joins the probe's diagnosis."""
    from harness.fuse_hold import HeldFile

    held = HeldFile(own_libvirt.root / "held").mount()
    waiting = None
    try:
        with HungTaskTimeout(2):
            daemon = start_daemon(write_config(own_libvirt.daemon_config(state_dir)))
            daemon.wait_journal("started")
            own_libvirt.arm(f"hang-read:{held.path}", count=1)
            waiting = own_libvirt.domcaps_async()
            pid = wait_for(own_libvirt.hung_probe, 30, "the probe to hang")["daemon"]
            daemon.wait_journal("action", timeout=30, KVMWD_ACTION="kill_probe")
            wait_for(lambda: state_of(pid) == "D", 30, "the signalled probe daemon to wait in D state")

            def joined() -> Optional[Dict[str, Any]]:
                result = run_cli("-c", daemon.config, "status", "--json")
                hung = [f for f in (result.json or {}).get("open", []) if f.get("kind") == "probe_hung"]
                said = [f for f in hung if f["evidence"].get("diagnosis", {}).get("kernel_said")]
                return said[0] if said else None

            finding = wait_for(joined, 60, "the kernel's hung-task line in the probe's diagnosis")
            report = run_cli("-c", daemon.config, "diagnose", "--json")  # an operator's look, from this boot's lines
            [told] = [p["diagnosis"].get("kernel_said") or "" for p in report.json["probes"]]
            assert f"INFO: task qemu-system-x86:{pid} blocked for more than " in told, report.json["probes"]
        said = finding["evidence"]["diagnosis"]["kernel_said"]
        assert f":{pid} blocked for more than " in said and said.startswith("INFO: task "), said
        assert finding["evidence"]["uninterruptible"] == [pid]
        [line] = [
            e
            for e in read_journal("_TRANSPORT=kernel")
            if e.get("MESSAGE", "").startswith("INFO: task ") and f":{pid} blocked" in e.get("MESSAGE", "")
        ][:1]
        assert line["SYSLOG_FACILITY"] == "0", "the kernel's own line, not one a process wrote"
    finally:
        held.close()  # the read is answered: the daemon ends at last (its SIGKILL was pending)
        if waiting is not None:
            waiting.wait(30)
        wait_for(lambda: own_libvirt.hung_probe() is None, 30, "the probe to be gone")
