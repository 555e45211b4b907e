#!/usr/bin/env python3
"""The incident, replayed and fixed in a sandboxed libvirt, told step by step.

A real session libvirtd (as an unprivileged user, under its own HOME) with a
fault-injecting emulator: the next capability probe hangs exactly as in
shared/seed/INCIDENT.md. kvm-watchdog finds it with `check` and ends it with
`remediate`; `virsh domcapabilities` works again. Everything is cleaned up.
Exits 0 only if the recovery was seen.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import yaml  # noqa: E402
from harness.sandbox import LibvirtSandbox  # noqa: E402
from harness.wait import wait_for  # noqa: E402

BOLD, DIM, OFF = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def say(text: str) -> None:
    print(f"\n{BOLD}== {text}{OFF}", flush=True)


def run(argv: list, check: bool = False) -> int:
    print(f"{DIM}$ {' '.join(argv)}{OFF}", flush=True)
    return subprocess.run(argv, check=check).returncode


def main() -> int:
    kvmwd = [sys.executable, "-m", "watchdogd"]
    box = LibvirtSandbox()
    state = Path(tempfile.mkdtemp(prefix="kvmwd-demo-state-"))
    try:
        say("Starting a sandboxed libvirtd (session daemon, its own user and dirs)")
        box.start()
        print(f"libvirtd pid {box.libvirtd_pid}, socket {box.socket}")
        cfg = state / "config.yaml"
        cfg.write_text(yaml.safe_dump(box.config(state, detect={"probe_hung_after": "3s"}, latency={"timeout": "5s", "every": "5s", "slow": "2s"})))
        if box.domcaps().returncode != 0:
            print("libvirt cannot probe even a healthy emulator here", file=sys.stderr)
            return 1

        say("A healthy host: kvm-watchdog check")
        run([*kvmwd, "-c", str(cfg), "check"])

        say("The kernel breaks: the next capability probe hangs (hang-init), and virsh waits behind it")
        waiting = box.hang("hang-init", count=1)
        run(["sh", "-c", f"ps -o pid,ppid,stat,args -u {box.user.pw_uid} | cut -c1-160"])
        quick_check = [*kvmwd, "-c", str(cfg), "check", "--no-latency"]
        wait_for(lambda: subprocess.run(quick_check, capture_output=True).returncode == 2, 30, "the probe to pass its deadline")

        say("kvm-watchdog check: what an operator sees (exit 2 = critical)")
        rc = run([*kvmwd, "-c", str(cfg), "check"])
        print(f"exit status {rc}")

        say("kvm-watchdog remediate: the policy kills the hung probe, safely")
        run([*kvmwd, "-c", str(cfg), "remediate", "--no-latency"])

        say("The virsh call that was waiting returns, and the next one works")
        waiting.wait(30)
        print(f"the waiting virsh domcapabilities returned (exit {waiting.returncode})")
        ok = box.domcaps()
        print(f"virsh domcapabilities: exit {ok.returncode}, {len(ok.stdout)} bytes of capabilities")
        rc_after = run([*kvmwd, "-c", str(cfg), "check"])
        recovered = ok.returncode == 0 and rc_after == 0
        say("Recovered" if recovered else "NOT recovered")
        return 0 if recovered else 1
    finally:
        box.destroy()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
