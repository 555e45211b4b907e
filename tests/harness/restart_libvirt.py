#!/usr/bin/env python3
"""restart_command for a sandbox: `systemctl restart libvirtd`, as the supervisor does it.

Usage: restart_libvirt.py SANDBOX_ROOT. Exits 0 once the new libvirtd answers.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def main(root: str) -> int:
    pidfile = Path(root) / "libvirtd.pid"
    old = pidfile.read_text().strip()
    supervisor = None
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmd = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if len(cmd) > 2 and cmd[1].endswith(b"supervisor.py") and cmd[2] == str(pidfile).encode():
                supervisor = int(name)
    if supervisor is None:
        sys.stderr.write(f"no supervisor runs the sandbox at {root}\n")
        return 1
    os.kill(supervisor, signal.SIGUSR1)
    socket = Path(root) / "home" / "run" / "libvirt" / "libvirt-sock"
    uri = f"qemu+unix:///session?socket={socket}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = pidfile.read_text().strip()
        if now not in (old, "0") and socket.exists():
            try:
                r = subprocess.run(
                    ["virsh", "-c", uri, "version"], capture_output=True, timeout=max(1, deadline - time.monotonic())
                )
            except subprocess.TimeoutExpired:
                break
            if r.returncode == 0:
                return 0
        time.sleep(0.05)
    sys.stderr.write("libvirtd did not come back within 60s\n")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
