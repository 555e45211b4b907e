"""A reload forgets nothing: what the logs said since the last read, and what the scan and the diagnosis remember."""

from __future__ import annotations

from pathlib import Path

from watchdogd.config import parse_config
from watchdogd.service.app import build


def test_a_reload_loses_no_log_line_written_since_the_last_read_nor_reads_one_twice(tmp_path: Path) -> None:
    logs = tmp_path / "log"
    logs.mkdir()
    (logs / "vm1.log").write_text("2026-12-02 starting up libvirt version: 9.0.0\n")
    text = f"state_dir: {tmp_path / 'state'}\nlibvirt:\n  probe_dirs: [{tmp_path}]\n  log_dir: {logs}\n"
    old = build(parse_config(text, "c.yaml"), read_only=True)
    assert not old.follow_logs(0.0), "the first read is history"
    with open(logs / "vm1.log", "a") as f:
        f.write("PMU: KVM_SET_DEVICE_ATTR: Invalid argument\n")  # written between the last read and the reload
    new = build(parse_config(text.replace("state_dir", "interval: 9s\nstate_dir"), "c.yaml"), read_only=True)
    new.carry_over(old)
    assert new.follow_logs(1.0), "the line is read by the reloaded daemon"
    assert new.diagnostician is not None
    [failure] = new.diagnostician.vm_starts.current(1.0)
    assert failure.domain == "vm1" and failure.cause == "no_in_kernel_vgic"
    assert not new.follow_logs(2.0), "and only once"
