"""The journal seam the journal monitors read through: systemd-python's journal.Reader, opened on a match.

systemd-python is imported only here and only when a monitor opens: a host without it runs, and says what it
does not read.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from ..typing_compat import Protocol


class JournalSource(Protocol):
    """Shaped like systemd-python's journal.Reader."""

    def fileno(self) -> int: ...

    def process(self) -> int: ...

    def get_next(self, skip: int = 1) -> Dict[str, Any]: ...

    def seek_cursor(self, cursor: str) -> None: ...

    def seek_tail(self) -> None: ...

    def get_previous(self, skip: int = 1) -> Dict[str, Any]: ...

    def test_cursor(self, cursor: str) -> bool: ...

    def close(self) -> None: ...


def open_reader(what: str, this_boot: bool = False, **match: str) -> Tuple[Optional[JournalSource], Optional[str]]:
    """A reader on the entries that match (of this boot only, if asked), or why there is none (`what` is not read)."""
    try:
        from systemd import journal  # type: ignore[attr-defined]
    except ImportError:
        return None, f"systemd-python is not installed: {what} are not read"
    try:
        reader = journal.Reader()
        if this_boot:
            reader.this_boot()
        reader.add_match(**match)
    except OSError as exc:
        return None, f"cannot open the journal: {exc.strerror}; {what} are not read"
    return reader, None
