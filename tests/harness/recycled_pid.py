"""A recycled PID, made for real, put to the kill path that has no pidfd (kernels before 5.3, as Kylin V10's 4.19).

A process is seen (its start time read), ends, and its PID is handed to a new process: the kernel
gives the next fork ns_last_pid + 1, so writing the old PID - 1 there (root) recycles it at once.
The ender, told to end what it saw, must find the PID names another process now, and leave it alone.
Run by the suite on the host and, as a script, by the installed package's own Python on the Kylin host.

Usage (as a script): python3 recycled_pid.py     prints one JSON object
"""

import json
import subprocess
import time
from typing import Dict, Tuple, Union

from watchdogd.act.process_ender import ProcessEnder
from watchdogd.observe.procfs import ProcFS

NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"


def recycle(proc: ProcFS) -> Tuple[object, "subprocess.Popen[bytes]"]:
    """What was seen of a process that ended, and the new process that has its PID now."""
    old = subprocess.Popen(["sleep", "600"])
    seen = proc.process(old.pid)
    assert seen is not None
    # a probe member is a minute old when it is ended; one started in the same clock tick as the new one would
    # share its start time, which is all the kernel tells apart (the kill's member re-check is the other guard)
    deadline = time.monotonic() + 10
    while proc.uptime() < seen.start_boot_s + 0.1 and time.monotonic() < deadline:
        time.sleep(0.01)
    old.kill()
    old.wait()
    for _ in range(200):  # another fork on the machine may take the PID first: try again
        with open(NS_LAST_PID, "w") as f:
            f.write(str(seen.pid - 1))
        new = subprocess.Popen(["sleep", "600"])
        if new.pid == seen.pid:
            return seen, new
        new.kill()
        new.wait()
    raise RuntimeError(f"PID {seen.pid} was not handed out again in 200 tries")


def refused_without_pidfd() -> Dict[str, Union[str, int, bool]]:
    """End a process whose PID was recycled, with pidfd off: what the ender said and did."""
    proc = ProcFS()
    seen, new = recycle(proc)
    try:
        outcome = ProcessEnder(proc, grace=1.0, use_pidfd=False).end(seen, lambda current: None)  # type: ignore[arg-type]
        return {
            "pid": new.pid,
            "ended": outcome.ended,
            "how": outcome.how,
            "new_process_alive": new.poll() is None,
        }
    finally:
        new.kill()
        new.wait()


if __name__ == "__main__":
    print(json.dumps(refused_without_pidfd()))
