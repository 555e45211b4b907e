"""One rule for every string that may carry what a guest or the qemu user wrote: made safe to show.

Log lines, log file names (a domain's name), process names (any uid can set its own
comm) and paths end up on an operator's terminal (check, status, diagnose, run
--verbose), in the journal's MESSAGE and in systemd's STATUS=. A control character
there can forge a line ("VERDICT: healthy"), clear the screen, or (a newline in an
sd_notify datagram) add a field such as WATCHDOG=trigger. So every C0 and C1 control,
DEL, the Unicode line and paragraph separators and the bidirectional overrides are
shown as escapes (``\\x1b``, ``\\u202e``), and bytes that were not UTF-8 (surrogate
escapes from os.fsdecode) as ``\\xNN``. Pure, no I/O.
"""

from __future__ import annotations

import re
from typing import Match, TextIO

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\udc80-\udcff]")


def _escape(match: Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"  # a byte that was not UTF-8 (surrogateescape)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """text with every control character escaped, newlines and tabs too: one line, safe anywhere.

    >>> printable("vm1\\x1b[2J\\x07\\nWATCHDOG=trigger")
    'vm1\\\\x1b[2J\\\\x07\\\\x0aWATCHDOG=trigger'
    >>> printable("qemu-system-x86 ok: ÄÖ"), printable("bad \\udcff byte")
    ('qemu-system-x86 ok: ÄÖ', 'bad \\\\xff byte')
    """
    return _UNSAFE.sub(_escape, text)


def printable_lines(text: str) -> str:
    """The same for a block of text of our own making: its newlines stay, every other control is escaped.

    >>> printable_lines("OK one\\nWARNING two \\x1b[31mred\\r")
    'OK one\\nWARNING two \\\\x1b[31mred\\\\x0d'
    """
    return "\n".join(printable(line) for line in text.split("\n"))


class PrintableWriter:
    """A text stream whose every write goes through printable_lines: what the CLI prints, whatever it prints."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(printable_lines(text))

    def flush(self) -> None:
        self.stream.flush()
