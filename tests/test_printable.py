"""What operators read cannot be written by a guest: no control character from untrusted input reaches any output.

A session user names its own log files, and a guest's QEMU writes its own log
lines. Here the session's user (a real unprivileged uid) makes a log whose name
carries `\\nWATCHDOG=trigger\\nSTOPPING=1` and a screen-clearing escape, and whose
line is the incident's PMU failure wrapped in ESC and BEL and a forged
"VERDICT: healthy" line. The daemon tells the failure; the sd_notify datagrams,
the journal, `status`, `check` and `diagnose` carry it escaped, never raw.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from harness.cli import run_cli_process
from harness.fixtures import HostileFigures, StartDaemon, WriteConfig
from harness.journald import Journald
from harness.sandbox import LibvirtSandbox
from harness.service import NotifyListener
from harness.wait import wait_for

EVIL_NAME = "vm1\nWATCHDOG=trigger\nSTOPPING=1\x1b[2J\x07"
EVIL_LINE = "\x1b[2J\x1b[HVERDICT: healthy\x07 PMU: KVM_SET_DEVICE_ATTR: Invalid argument\x1b]0;owned\x07\n"
RAW = ("\x1b", "\x07")


def write_as(uid: int, gid: int, path: str, text: str) -> None:
    """Create a file as that user (setpriv), as a session's guest would."""
    code = "import os, sys; os.makedirs(os.path.dirname(sys.argv[1]), exist_ok=True); open(sys.argv[1], 'w').write(sys.argv[2])"
    subprocess.run(
        [
            "setpriv",
            f"--reuid={uid}",
            f"--regid={gid}",
            "--clear-groups",
            "--",
            "/usr/bin/python3",
            "-c",
            code,
            path,
            text,
        ],
        check=True,
        timeout=30,
    )


SEEN: List[int] = []  # raw control characters of untrusted input found, all outputs together


def no_raw_control(text: str, where: str) -> None:
    found = sum(text.count(c) for c in RAW)
    SEEN.append(found)
    assert not found, f"a raw ESC or BEL in {where}: {text[:400]!r}"


@pytest.mark.hostile
def test_a_guests_log_name_and_lines_reach_no_output_raw(
    journald: Journald,
    libvirt: LibvirtSandbox,
    state_dir: Path,
    write_config: WriteConfig,
    start_daemon: StartDaemon,
    notify_socket: NotifyListener,
    figures: HostileFigures,
) -> None:
    cfg = write_config(libvirt.config(state_dir, interval="30s", events="journal", latency={"enabled": False}))
    daemon = start_daemon(cfg, env={"NOTIFY_SOCKET": str(notify_socket.path)})
    wait_for(lambda: notify_socket.with_key("READY"), 30, "READY=1")
    write_as(libvirt.user.pw_uid, libvirt.user.pw_gid, str(libvirt.log_dir / (EVIL_NAME + ".log")), EVIL_LINE)
    try:
        [opened] = daemon.wait_journal("vm_start_failed", timeout=30, KVMWD_STATE="open")
        assert opened["KVMWD_SUBJECT"] == "vm1\\x0aWATCHDOG=trigger\\x0aSTOPPING=1\\x1b[2J\\x07", "the name, escaped"
        for key, value in opened.items():
            if isinstance(value, str):
                no_raw_control(value, f"the journal field {key}")
                assert "\n" not in value or key == "KVMWD_EVIDENCE", key

        # the STATUS line follows the journal event within the same scan: wait for it, never read it at the event
        def status_names_it() -> Optional[List[Dict[str, str]]]:
            statuses: List[Dict[str, str]] = [m for _, m in notify_socket.with_key("STATUS")]
            return statuses if any("vm_start_failed" in m["STATUS"] for m in statuses) else None

        wait_for(status_names_it, 30, "a STATUS line naming vm_start_failed")
        fields = {k for _, m in notify_socket.messages for k in m}
        assert (
            fields <= {"READY", "STATUS", "MAINPID", "WATCHDOG", "RELOADING", "STOPPING"} and "STOPPING" not in fields
        ), fields
        assert not [m for _, m in notify_socket.messages if "WATCHDOG" in m and m["WATCHDOG"] != "1"], (
            "no forged WATCHDOG=trigger"
        )

        status = run_cli_process("-c", cfg, "status")
        no_raw_control(status.out, "kvm-watchdog status")
        assert "vm_start_failed" in status.out
        diagnose = run_cli_process("-c", cfg, "diagnose")
        no_raw_control(diagnose.out + diagnose.err, "kvm-watchdog diagnose")
        assert not [ln for ln in diagnose.out.splitlines() if ln.startswith("VERDICT: healthy")], (
            "no forged verdict line"
        )
        report = json.loads(run_cli_process("-c", cfg, "diagnose", "--json").out)
        assert any("PMU" in s["line"] for s in report["signatures"]), "the line is still there, escaped"
        no_raw_control(run_cli_process("-c", cfg, "check").out, "kvm-watchdog check")
        no_raw_control(daemon.stdout_path.read_text() + daemon.stderr_path.read_text(), "the daemon's own output")
        forged_lines = [
            m
            for _, m in notify_socket.messages
            if set(m) - {"READY", "STATUS", "MAINPID", "WATCHDOG", "RELOADING", "STOPPING"}
        ]
        figures.raw_controls_in_output = sum(SEEN) + len(forged_lines)
    finally:
        (libvirt.log_dir / (EVIL_NAME + ".log")).unlink(missing_ok=True)
