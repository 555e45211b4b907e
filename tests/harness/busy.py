"""`make test-busy`: a command (make test) run while the machine also does other work, as CI's and a
developer's machines do: a CPU-bound job on every core and a KVM guest of the machine's own, named as
libvirt names its guests. A suite that passes only on an idle machine blocks everyone.

Usage: python tests/harness/busy.py COMMAND [ARG...]   (its exit status is the command's)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import List

SPIN = "while True: pass"


def start_load() -> List[subprocess.Popen[bytes]]:
    jobs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(os.cpu_count() or 1)]
    qemu = shutil.which("qemu-system-x86_64")
    if qemu and os.access("/dev/kvm", os.R_OK | os.W_OK):
        # no disk: SeaBIOS finds nothing to boot and retries, a KVM guest like any other to the host
        guest = [qemu, "-name", "guest=kvmwd-busy-guest,debug-threads=on", "-machine", "q35,accel=kvm"]
        guest += ["-m", "256", "-display", "none", "-nodefaults", "-no-user-config", "-serial", "null"]
        jobs.append(subprocess.Popen(guest, stdin=subprocess.DEVNULL))
    else:
        print("busy: no qemu-system-x86_64 or /dev/kvm: the CPU-bound job only", file=sys.stderr)
    return jobs


def main(argv: List[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    jobs = start_load()
    print(f"busy: {len(jobs)} jobs beside the command: pids {' '.join(str(j.pid) for j in jobs)}", file=sys.stderr)
    try:
        return subprocess.call(argv)
    finally:
        for job in jobs:  # ours, by pid
            job.kill()
            job.wait(30)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
