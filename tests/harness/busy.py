"""`make test-busy`: a command (make test) run while the machine also does other work, as CI's and a
developer's machines do: a CPU-bound job on every core and a KVM guest of the machine's own, named as
libvirt names its guests. A suite that passes only on an idle machine blocks everyone.

The command runs RUNS times in a row under the same load; each run's exit status, seconds and pytest's
summary line are written to RECORD (the README's busy figures are that file's).

Usage: python tests/harness/busy.py [--runs N] [--record FILE] COMMAND [ARG...]
       (its exit status is the first failed run's, else 0)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

SPIN = "while True: pass"
SUMMARY = re.compile(r"=+ (\d+ (passed|failed|error).*) in [\d.]+s")  # pytest's last line


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


def run_once(command: List[str]) -> Dict[str, Any]:
    """The command, its output passed on as it comes; what it ended with."""
    started = time.monotonic()
    summary: Optional[str] = None
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    for raw in proc.stdout:
        sys.stdout.buffer.write(raw)
        sys.stdout.flush()
        found = SUMMARY.search(raw.decode(errors="replace"))
        summary = found.group(1) if found else summary
    rc = proc.wait()
    return {"rc": rc, "seconds": round(time.monotonic() - started), "summary": summary}


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(usage=__doc__)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--record", type=Path)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if not args.command:
        print(__doc__, file=sys.stderr)
        return 2
    jobs = start_load()
    print(f"busy: {len(jobs)} jobs beside the command: pids {' '.join(str(j.pid) for j in jobs)}", file=sys.stderr)
    runs: List[Dict[str, Any]] = []
    try:
        for _ in range(args.runs):
            runs.append(run_once(args.command))
            print(f"busy: run {len(runs)} of {args.runs}: {runs[-1]}", file=sys.stderr)
            if runs[-1]["rc"] != 0:
                break
    finally:
        for job in jobs:  # ours, by pid
            job.kill()
            job.wait(30)
    if args.record:
        load = {"cpu_bound_jobs": os.cpu_count(), "kvm_guest": len(jobs) > (os.cpu_count() or 1)}
        when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        args.record.write_text(json.dumps({"at": when, "load": load, "runs": runs}, indent=1) + "\n")
    return next((r["rc"] for r in runs if r["rc"] != 0), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
