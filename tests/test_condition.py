"""Telling the fleet's scheduler: "this host cannot start VMs", and when it can again.

Against a real session libvirtd: a replayed hang opens the host condition vm_starts_blocked
(one journal event, naming probe_hung), which node-problem-detector reads from
`kvm-watchdog status --npd` (exit 1, one short line; no libvirt call) and Prometheus from
kvmwd_vm_starts_blocked. Ended by hand, the hang leaves libvirt without capabilities (its own
probe-failure entry: probe_failed), so VM starts stay blocked until the next probe works; then
the condition resolves once, and both read 0 again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Tuple

from harness.cli import REPO, run_cli_process
from harness.fixtures import StartDaemon, WriteConfig
from harness.journald import Journald
from harness.prom import samples
from harness.sandbox import LibvirtSandbox
from harness.wait import wait_for


def npd(config: str) -> Tuple[int, str]:
    """What node-problem-detector's custom plugin sees: the exit code and the one line (a process of its own)."""
    r = run_cli_process("-c", config, "status", "--npd", timeout=10)
    return r.rc, r.out.strip()


def blocked_metric(textfile: Path) -> Optional[float]:
    try:
        return samples(textfile.read_text(), "kvmwd_vm_starts_blocked").get("")
    except OSError:
        return None


def test_a_hang_blocks_vm_starts_until_it_ends_told_once_each_way_to_the_journal_npd_and_prometheus(
    journald: Journald,
    libvirt: LibvirtSandbox,
    state_dir: Path,
    tmp_path: Path,
    write_config: WriteConfig,
    start_daemon: StartDaemon,
) -> None:
    textfile = tmp_path / "kvm-watchdog.prom"
    config = write_config(
        libvirt.daemon_config(
            state_dir,
            metrics={"textfile": str(textfile)},
            policies=[{"name": "tell", "on": "probe_hung", "do": ["alert"]}],  # the operator ends it, below
        )
    )
    daemon = start_daemon(config)
    daemon.wait_journal("started")
    wait_for(lambda: npd(config) == (0, "VM starts not blocked"), 30, "NPD: not blocked")
    assert wait_for(lambda: blocked_metric(textfile) == 0, 30, "kvmwd_vm_starts_blocked 0")

    waiting = libvirt.hang("hang-init", count=1)
    [opened] = daemon.wait_journal("vm_starts_blocked", timeout=60, KVMWD_STATE="open")
    assert [r["kind"] for r in json.loads(opened["KVMWD_REASONS"])] == ["probe_hung"], opened["KVMWD_REASONS"]
    assert opened["PRIORITY"] == "2" and "VM starts are blocked" in opened["MESSAGE"]
    rc, line = wait_for(lambda: (a := npd(config))[0] == 1 and a, 30, "NPD: blocked")
    assert line == "VM starts blocked: probe_hung" and len(line) <= 80
    wait_for(lambda: blocked_metric(textfile) == 1, 30, "kvmwd_vm_starts_blocked 1")
    status = run_cli_process("-c", config, "status", "--json").json
    assert status["condition"]["state"] == "open" and "VM STARTS BLOCKED" in status["status_line"], status

    libvirt.release()  # the operator ends the hung probe: libvirt logs it as failed, and has no capabilities yet
    waiting.wait(60)
    [failed] = daemon.wait_journal("probe_failed", timeout=30, KVMWD_STATE="open")
    assert json.loads(failed["KVMWD_EVIDENCE"])["diagnosis"]["cause"] == "probe_ended_silently"
    assert npd(config)[0] == 1, "still blocked: no VM can start until a probe works"
    assert libvirt.domcaps().returncode == 0, "the next probe works"
    daemon.wait_journal("vm_starts_blocked", timeout=60, KVMWD_STATE="resolved")
    wait_for(lambda: npd(config) == (0, "VM starts not blocked"), 30, "NPD: not blocked again")
    wait_for(lambda: blocked_metric(textfile) == 0, 30, "kvmwd_vm_starts_blocked 0 again")
    assert [e["KVMWD_STATE"] for e in daemon.journal_events("vm_starts_blocked")] == ["open", "resolved"], (
        "told once each way"
    )


def test_the_shipped_npd_plugin_runs_the_installed_cli_within_npds_limits() -> None:
    monitor = json.loads((REPO / "packaging" / "npd" / "kvm-watchdog-plugin-monitor.json").read_text())
    assert monitor["plugin"] == "custom" and monitor["pluginConfig"]["max_output_length"] >= 80
    [rule] = monitor["rules"]
    assert (rule["path"], rule["args"], rule["condition"]) == (
        "/usr/bin/kvm-watchdog",
        ["status", "--npd"],
        "KvmVmStartsBlocked",
    )
    assert [c["type"] for c in monitor["conditions"]] == ["KvmVmStartsBlocked"]
