"""The kernel's own lines of this boot, from the journal's kernel transport; and its hung-task lines as they come.

Only the kernel's own lines carry facility 0: a line any process writes to /dev/kmsg (root's
only, and given facility 1) is never taken for the kernel's. this_boot() is read on demand
(`diagnose`, and once where there is no /dev/kvm): its first BOOT_ENTRIES (where KVM and the GIC
say what they found) and its last RECENT_ENTRIES, so a chatty kernel costs a bounded read.
BlockedTasks is the monitor the loop reads every scan: the hung-task watchdog's lines (`INFO: task
COMM:PID blocked for more than N seconds`, a task in D state that SIGKILL cannot end), READ_CAP a
read, the newest MAX_BLOCKED pids kept.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from .journal import JournalSource, open_reader

BOOT_ENTRIES = 5000
RECENT_ENTRIES = 5000
KERNEL_FACILITY = 0
READ_CAP = 500  # kernel entries read per scan
MAX_BLOCKED = 64  # pids whose hung-task line is kept
# kernel/hung_task.c; a comm is at most 15 characters, and may hold ':' itself
HUNG_TASK = re.compile(r"INFO: task (?P<comm>.{1,15}):(?P<pid>[0-9]+) blocked for more than [0-9]+ seconds")


@dataclass(frozen=True)
class KernelLine:
    when: float
    text: str


def _line(entry: Any) -> Optional[KernelLine]:
    if entry.get("SYSLOG_FACILITY") != KERNEL_FACILITY or not isinstance(entry.get("MESSAGE"), str):
        return None
    when = entry.get("__REALTIME_TIMESTAMP")
    return KernelLine(when.timestamp() if isinstance(when, datetime.datetime) else 0.0, entry["MESSAGE"][:1000])


def _kernel_reader() -> Tuple[Optional[JournalSource], Optional[str]]:
    return open_reader("the kernel's own lines", this_boot=True, _TRANSPORT="kernel")


def this_boot() -> Tuple[List[KernelLine], Optional[str]]:
    """The kernel's lines of this boot (its first and its latest), or why they could not be read."""
    reader, why_not = _kernel_reader()
    if reader is None:
        return [], why_not
    try:
        lines: List[KernelLine] = []
        cursors = set()
        for _ in range(BOOT_ENTRIES):
            entry = reader.get_next()
            if not entry:
                break
            cursors.add(entry.get("__CURSOR"))
            lines.append(_line(entry) or KernelLine(0.0, ""))
        reader.seek_tail()
        recent: List[KernelLine] = []
        for _ in range(RECENT_ENTRIES):
            entry = reader.get_previous()
            if not entry or entry.get("__CURSOR") in cursors:
                break
            recent.append(_line(entry) or KernelLine(0.0, ""))
        reader.close()
    except OSError as exc:
        return [], f"cannot read the kernel's lines from the journal: {exc.strerror}"
    return [line for line in lines + recent[::-1] if line.text], None


def blocked_pid(text: str) -> Optional[Tuple[str, int]]:
    """The task a hung-task line names, as (comm, pid).

    >>> blocked_pid("INFO: task qemu-system-aar:4242 blocked for more than 120 seconds.")
    ('qemu-system-aar', 4242)
    >>> blocked_pid("INFO: task a:b:7 blocked for more than 122 seconds."), blocked_pid("kvm: disabled by bios")
    (('a:b', 7), None)
    """
    m = HUNG_TASK.search(text)
    return (m.group("comm"), int(m.group("pid"))) if m else None


class BlockedTasks:
    """The monitor: the kernel's hung-task lines of this boot, read as they come; pid -> (comm, the line)."""

    def __init__(self, source: Optional[JournalSource]):
        self.source = source  # at this boot's first entry: a task blocked before a restart is still told
        self.blocked: Dict[int, Tuple[str, KernelLine]] = {}

    @classmethod
    def opened(cls) -> Tuple[BlockedTasks, Optional[str]]:
        reader, why_not = _kernel_reader()
        return cls(reader), why_not

    @classmethod
    def of_lines(cls, lines: List[KernelLine]) -> BlockedTasks:
        """From lines read already (`diagnose`: this_boot's), with nothing more to read."""
        found = cls(None)
        for line in lines:
            found._take(line)
        return found

    def read(self) -> Optional[str]:
        """New kernel entries, READ_CAP at most; why they could not be read, if so."""
        if self.source is None:
            return None
        try:
            for _ in range(READ_CAP):
                entry = self.source.get_next()
                if not entry:
                    break
                line = _line(entry)
                if line is not None:
                    self._take(line)
        except OSError as exc:
            return f"cannot read the kernel's lines from the journal: {exc.strerror}"
        return None

    def _take(self, line: KernelLine) -> None:
        named = blocked_pid(line.text)
        if named is None:
            return
        self.blocked.pop(named[1], None)  # the newest last
        self.blocked[named[1]] = (named[0], line)
        while len(self.blocked) > MAX_BLOCKED:
            del self.blocked[next(iter(self.blocked))]

    def said_of(self, pid: int, comm: str, started_wall: float) -> Optional[KernelLine]:
        """The kernel's hung-task line of this very process (its pid, its name, told after it started), if any."""
        seen = self.blocked.get(pid)
        if seen is None or seen[0] != comm[:15] or seen[1].when < started_wall:
            return None
        return seen[1]
