"""Failures, not only hangs: a probe that fails is told from libvirt's own journal entry.

The real libvirt (a session daemon, `log_outputs = "3:journald"` as a system one logs by
default) logs each failed probe with MESSAGE_ID 8ae2f3fb-... to the real journald; the
emulator prints QEMU's own "Could not access KVM kernel module: Permission denied" and
exits 1. The watchdog opens probe_failed from that entry with the binary and the cause,
resolves it once a probe of the binary works, believes no one but libvirt, and after a
restart neither repeats nor loses an entry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

from harness.actors import as_nobody
from harness.fixtures import StartDaemon, WriteConfig
from harness.journald import Journald, read_journal
from harness.sandbox import LibvirtSandbox
from harness.service import RunningDaemon

from watchdogd.observe.libvirt_journal import PROBE_FAILED_ID


def watching(libvirt: LibvirtSandbox, state_dir: Path, write_config: WriteConfig) -> str:
    """A daemon whose scans come a minute apart: only the journal's own wake-up can tell a failure sooner."""
    return write_config(libvirt.config(state_dir, interval="60s", events="journal", latency={"enabled": False}))


def fail_one_probe(libvirt: LibvirtSandbox) -> None:
    libvirt.arm("no-kvm", count=1)
    failed = libvirt.domcaps()
    assert failed.returncode != 0 and "Could not access KVM kernel module" in failed.stderr, failed.stderr


def libvirts_entries(libvirt: LibvirtSandbox) -> List[Dict[str, str]]:
    return [
        e
        for e in read_journal(f"MESSAGE_ID={PROBE_FAILED_ID}", f"LIBVIRT_QEMU_BINARY={libvirt.emulator}")
        if e.get("_COMM") == "libvirtd"
    ]


def opened(daemon: RunningDaemon, count: int = 1) -> List[Dict[str, str]]:
    return daemon.wait_journal("probe_failed", timeout=30, count=count, KVMWD_STATE="open")


def test_a_probe_that_cannot_use_kvm_is_told_from_libvirts_entry_at_once_and_resolves_when_a_probe_works(
    journald: Journald, libvirt: LibvirtSandbox, state_dir: Path, write_config: WriteConfig, start_daemon: StartDaemon
) -> None:
    daemon = start_daemon(watching(libvirt, state_dir, write_config))
    daemon.wait_journal("started")
    before = len(libvirts_entries(libvirt))
    fail_one_probe(libvirt)
    [told] = opened(daemon)
    [entry] = libvirts_entries(libvirt)[before:]
    evidence = json.loads(told["KVMWD_EVIDENCE"])
    assert told["KVMWD_SUBJECT"] == str(libvirt.emulator), "the subject is the binary libvirt could not probe"
    assert evidence["diagnosis"]["cause"] == "kvm_unavailable", evidence
    assert "Could not access KVM kernel module" in evidence["qemu_said"]
    assert evidence["libvirt_pid"] == int(entry["_PID"]) and evidence["grounds"] == "host", evidence
    after_s = (int(told["__REALTIME_TIMESTAMP"]) - int(entry["__REALTIME_TIMESTAMP"])) / 1e6
    print(f"probe_failed told {after_s:.2f} s after libvirt's entry (scans 60 s apart)")
    assert after_s < 5, "woken by the journal, not by the next scan a minute later"

    assert libvirt.domcaps().returncode == 0, "the next probe works (the fault was for one probe)"
    [resolved] = daemon.wait_journal("probe_failed", timeout=30, KVMWD_STATE="resolved")
    assert resolved["KVMWD_SUBJECT"] == str(libvirt.emulator)


def test_an_entry_from_anyone_but_libvirt_opens_nothing(
    journald: Journald,
    libvirt: LibvirtSandbox,
    state_dir: Path,
    write_config: WriteConfig,
    start_daemon: StartDaemon,
    tmp_path: Path,
) -> None:
    """nobody logs libvirt's MESSAGE_ID from a program it named libvirtd: journald's _UID says whose it is."""
    daemon = start_daemon(watching(libvirt, state_dir, write_config))
    daemon.wait_journal("started")
    named = tmp_path / "bin" / "libvirtd"
    named.parent.mkdir()
    shutil.copy(shutil.which("logger") or "/usr/bin/logger", named)
    os.chmod(named.parent, 0o755)
    forged = f"MESSAGE_ID={PROBE_FAILED_ID}\nLIBVIRT_QEMU_BINARY=/usr/bin/qemu-forged\nMESSAGE=Failed to probe capabilities for /usr/bin/qemu-forged: internal error: Failed to start QEMU binary /usr/bin/qemu-forged for probing: Could not access KVM kernel module: Permission denied\n"
    subprocess.run(as_nobody([str(named), "--journald"]), input=forged, text=True, check=True, timeout=30)
    assert [e for e in read_journal(f"MESSAGE_ID={PROBE_FAILED_ID}", "LIBVIRT_QEMU_BINARY=/usr/bin/qemu-forged")], (
        "the forged entry is in the journal, named libvirtd"
    )
    fail_one_probe(libvirt)  # logged after the forged one: once it is told, the forged one has been read
    [told] = opened(daemon)
    assert told["KVMWD_SUBJECT"] == str(libvirt.emulator)
    assert [e["KVMWD_SUBJECT"] for e in daemon.journal_events("probe_failed")] == [str(libvirt.emulator)]


def test_a_restarted_watchdog_tells_what_failed_while_it_was_down_and_nothing_twice(
    journald: Journald, libvirt: LibvirtSandbox, state_dir: Path, write_config: WriteConfig, start_daemon: StartDaemon
) -> None:
    config = watching(libvirt, state_dir, write_config)
    first = start_daemon(config)
    first.wait_journal("started")
    fail_one_probe(libvirt)
    opened(first)
    assert libvirt.domcaps().returncode == 0
    first.wait_journal("probe_failed", timeout=30, KVMWD_STATE="resolved")
    assert first.stop() == 0

    fail_one_probe(libvirt)  # while no watchdog runs
    second = start_daemon(config)
    [told] = opened(second)
    assert told["KVMWD_SUBJECT"] == str(libvirt.emulator), "the entry logged while it was down, from its cursor"
    assert libvirt.domcaps().returncode == 0
    second.wait_journal("probe_failed", timeout=30, KVMWD_STATE="resolved")
    assert len(second.journal_events("probe_failed", KVMWD_STATE="open")) == 1, "the first failure is not told again"
