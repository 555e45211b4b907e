"""The kernel's own lines of this boot, from the journal's kernel transport.

Only the kernel's own lines carry facility 0: a line any process writes to /dev/kmsg (root's
only, and given facility 1) is never taken for the kernel's. Read on demand (`diagnose`), this
boot only: its first BOOT_ENTRIES (where KVM and the GIC say what they found) and its last
RECENT_ENTRIES (a hung task), so a chatty kernel costs a bounded read.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

BOOT_ENTRIES = 5000
RECENT_ENTRIES = 5000
KERNEL_FACILITY = 0


@dataclass(frozen=True)
class KernelLine:
    when: float
    text: str


def _line(entry: Any) -> Optional[KernelLine]:
    if entry.get("SYSLOG_FACILITY") != KERNEL_FACILITY or not isinstance(entry.get("MESSAGE"), str):
        return None
    when = entry.get("__REALTIME_TIMESTAMP")
    return KernelLine(when.timestamp() if isinstance(when, datetime.datetime) else 0.0, entry["MESSAGE"][:1000])


def this_boot() -> Tuple[List[KernelLine], Optional[str]]:
    """The kernel's lines of this boot (its first and its latest), or why they could not be read."""
    try:
        from systemd import journal  # type: ignore[attr-defined]
    except ImportError:
        return [], "systemd-python is not installed: the kernel's own lines are not read"
    try:
        reader = journal.Reader()
        reader.this_boot()
        reader.add_match(_TRANSPORT="kernel")
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
