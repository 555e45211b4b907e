#!/usr/bin/env python3
"""The incident, replayed in a sandboxed libvirt, caught and fixed by the running daemon.

A real session libvirtd (as an unprivileged user, under its own HOME) with a
fault-injecting emulator: the next capability probe hangs exactly as in
shared/seed/INCIDENT.md. Where gcc can build the LD_PRELOAD shim, the probe is the
REAL qemu-system-x86_64, held at the chdir("/") its daemon makes right before it
reports "started" (where the incident's daemon deadlocked), so the watchdog's
diagnosis is the incident's own: userspace_deadlock. Elsewhere the fake emulator
replays the same three processes (its diagnosis: no known shape); the demo says
which ran. `kvm-watchdog run` runs in the foreground (its events
echoed on the terminal, and sent to the real journal); it finds the probe at its
deadline, ends it, and reports it resolved; `virsh domcapabilities` works again;
the journal is read back with journalctl. Everything is cleaned up. Exits 0 only
if the recovery was seen.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import yaml  # noqa: E402
from harness.journald import Journald  # noqa: E402
from harness.sandbox import LibvirtSandbox  # noqa: E402
from harness.service import RunningDaemon, command  # noqa: E402
from harness.wait import Timeout, wait_for  # noqa: E402

BOLD, DIM, OFF = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")
HUNG_AFTER = 5


def say(text: str) -> None:
    print(f"\n{BOLD}== {text}{OFF}", flush=True)


def show(argv: List[str]) -> int:
    print(f"{DIM}$ {' '.join(argv)}{OFF}", flush=True)
    return subprocess.run(argv).returncode


def hang_mode(box: LibvirtSandbox) -> Tuple[str, str]:
    """The real QEMU held by the LD_PRELOAD shim where gcc builds it; the fake emulator's replay elsewhere."""
    try:
        box.build_hang_shim()
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"(the LD_PRELOAD shim could not be built: {exc}; the fake emulator replays the hang instead)")
        return "hang-init", "the fake emulator's replay: first process, zombie, daemon that never reports started"
    return (
        "real-hang",
        'the REAL qemu-system-x86_64, its daemon held at chdir("/") by an LD_PRELOAD shim, as the incident\'s '
        "deadlocked",
    )


def main() -> int:
    kvmwd = [command()]
    journald = Journald()
    box = LibvirtSandbox()
    state = Path(tempfile.mkdtemp(prefix="kvmwd-demo-"))
    daemon = None
    recovered = False
    try:
        say("Setting up: the real journald, and a sandboxed libvirtd (session daemon, its own user and dirs)")
        journald.ensure()
        print("journald:", "started for this demo" if journald.owned else "already running")
        box.start()
        print(f"libvirtd pid {box.libvirtd_pid}, socket {box.socket}")
        if box.domcaps().returncode != 0:
            print("libvirt cannot probe even a healthy emulator here", file=sys.stderr)
            return 1
        cfg = state / "config.yaml"
        settings = box.config(
            state,
            interval="30s",
            events="journal",
            detect={"probe_hung_after": f"{HUNG_AFTER}s"},
            latency={"every": "10s", "timeout": "5s", "slow": "2s"},
        )
        cfg.write_text(yaml.safe_dump(settings, sort_keys=False))
        print(
            f"config: full scan every 30s, a probe is hung after {HUNG_AFTER}s (its own timer, not the scan), events "
            "to the journal"
        )

        say("kvm-watchdog run --verbose: the daemon in the foreground, its events echoed here")
        daemon = RunningDaemon(str(cfg), state, args=["--verbose"])
        wait_for((state / "status.json").exists, 30, "the daemon's first scan")
        show([*kvmwd, "-c", str(cfg), "status"])

        mode, how = hang_mode(box)
        say(f"The host breaks: the next capability probe hangs ({how}), and virsh waits behind it")
        started = time.monotonic()
        waiting = box.hang(mode, count=1)
        show(["sh", "-c", f"ps -o pid,ppid,stat,etime,args -u {box.user.pw_uid} | grep -v ' libvirtd ' | cut -c1-150"])
        print(
            f"(the daemon's timer for this probe fires {HUNG_AFTER}s after it started; watch its lines below)",
            flush=True,
        )

        def echoed() -> str:
            return daemon.stdout_path.read_text(errors="replace") if daemon else ""

        def tail_until(condition: str, timeout: float) -> None:
            printed = 0
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                text = echoed()
                lines = text.splitlines()
                for line in lines[printed:]:
                    print(f"  {line[:220]}", flush=True)
                printed = len(lines)
                if condition in text:
                    return
                time.sleep(0.1)
            raise Timeout(f"no '{condition}' from the daemon within {timeout:.0f}s")

        tail_until("probe_hung/resolved", 60)
        print(f"caught and fixed {time.monotonic() - started:.1f}s after the hang began")
        [hung] = daemon.journal_events("probe_hung", KVMWD_STATE="open") or [{}]
        why = json.loads(hung.get("KVMWD_EVIDENCE", "{}")).get("diagnosis", {})
        print(f"why it hung: {why.get('stage')} / blocked in {why.get('blocked_in')} / {why.get('cause')}")
        print(f"what to do: {why.get('what_to_do')}")

        say("The virsh call that was waiting returns, and the next one works")
        waiting.wait(30)
        print(f"the waiting virsh domcapabilities returned (exit {waiting.returncode}: its probe was ended)")
        ok = box.domcaps()
        print(f"virsh domcapabilities: exit {ok.returncode}, {len(ok.stdout)} bytes of capabilities")

        say("kvm-watchdog status: what the daemon saw last")
        show([*kvmwd, "-c", str(cfg), "status"])

        say("The journal, as an operator reads it")
        pid = str(daemon.pid)
        wait_for(
            lambda: daemon.journal_events("probe_hung", KVMWD_STATE="resolved"), 30, "the resolved event in the journal"
        )
        show(
            [
                "journalctl",
                "--no-pager",
                "-o",
                "short-iso",
                f"_PID={pid}",
                "SYSLOG_IDENTIFIER=kvm-watchdog",
                "--since",
                daemon.started_at,
            ]
        )
        print(f"\n{DIM}# one event, all its fields:{OFF}")
        show(
            [
                "sh",
                "-c",
                f"journalctl --no-pager -o verbose _PID={pid} KVMWD_EVENT=probe_hung KVMWD_STATE=open --since "
                f"'{daemon.started_at}'"
                " | grep -E '^ *(MESSAGE_ID|PRIORITY|SYSLOG_IDENTIFIER|KVMWD_[A-Z_]+)=' | grep -v KVMWD_EVIDENCE",
            ]
        )

        opened = daemon.journal_events("probe_hung", KVMWD_STATE="open")
        actions = daemon.journal_events("action", KVMWD_ACTION="kill_probe", KVMWD_RESULT="ok")
        resolved = daemon.journal_events("probe_hung", KVMWD_STATE="resolved")
        recovered = ok.returncode == 0 and len(opened) == 1 and len(actions) == 1 and len(resolved) == 1
        return 0 if recovered else 1
    finally:
        if daemon is not None:
            daemon.signal(signal.SIGTERM)
            try:
                daemon.proc.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
        box.destroy()
        journald.close()
        shutil.rmtree(state, ignore_errors=True)
        say(
            "Recovered: one open event, one kill_probe ok, one resolved, capabilities back"
            if recovered
            else "NOT recovered"
        )


if __name__ == "__main__":
    sys.exit(main())
