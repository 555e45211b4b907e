"""A process the test itself started, read as the watchdog reads it (there, or the test fails saying so), and its comm."""

from __future__ import annotations

from watchdogd.model import Process
from watchdogd.observe.procfs import ProcFS


def process_of(proc: ProcFS, pid: int) -> Process:
    seen = proc.process(pid)
    assert seen is not None, f"process {pid} is gone"
    return seen


def comm_of(pid: int) -> str:
    """The name the kernel shows for pid (what ps and the emulator rule read)."""
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()
