"""What a job inside a machine of harness/vm.py keeps: every command it ran (its exit status, time and output),
the journal events it read, and the figures it took, saved to results.json as it goes, so a failure says how far
it got. Copied beside the job script (with wait.py): the machine's python3 runs it without the rest of the harness.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List

if TYPE_CHECKING:
    from harness.wait import wait_for
else:  # copied beside it
    from wait import wait_for


class Record:
    def __init__(self, job: str):
        self.job = job
        self.results: Dict[str, Any] = {"steps": []}

    def save(self) -> None:
        tmp = os.path.join(self.job, "results.json.tmp")
        with open(tmp, "w") as f:
            json.dump(self.results, f, indent=1)
        os.rename(tmp, os.path.join(self.job, "results.json"))

    def sh(self, command: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        r = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, timeout=timeout)
        self.results["steps"].append(
            {
                "command": command,
                "rc": r.returncode,
                "seconds": round(time.monotonic() - started, 2),
                "out": r.stdout[-4000:],
                "err": r.stderr[-4000:],
            }
        )
        self.save()
        if check and r.returncode != 0:
            raise SystemExit(f"`{command}` exited {r.returncode}: {r.stderr[-2000:]}")
        return r

    def run(self, main: Callable[[], None]) -> None:
        """The job's story: `done` once it ran to its end; the watchdog's last words whatever happened."""
        try:
            main()
            self.results["done"] = True
            self.save()
        finally:
            self.tail_of_the_journal()

    def tail_of_the_journal(self) -> None:
        self.results["journal_tail"] = subprocess.run(
            ["/bin/sh", "-c", "journalctl --no-pager -u kvm-watchdog -o cat | tail -n 60"],
            capture_output=True,
            text=True,
        ).stdout
        self.save()


def journal(**fields: str) -> List[Dict[str, Any]]:
    """kvm-watchdog's journal events with these fields, oldest first."""
    matches = " ".join(f"{k}={v}" for k, v in fields.items())
    out = subprocess.run(
        ["/bin/sh", "-c", f"journalctl --no-pager -o json -u kvm-watchdog {matches}"], capture_output=True, text=True
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def alive(pid: int) -> bool:
    """Running, that is: present and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def arm(emulator: str, mode: str) -> None:
    """Set the fault-injecting emulator's fault, and move its ctime to a new second: libvirt re-probes a binary
    whose ctime changed (it compares whole seconds), as after a package upgrade."""
    with open(emulator + ".fault", "w") as f:
        f.write(mode + "\n")
    before = os.stat(emulator).st_ctime

    def touched() -> bool:
        os.chmod(emulator, 0o755)
        return int(os.stat(emulator).st_ctime) != int(before)

    wait_for(touched, 5, "a new ctime second", poll=0.1)
