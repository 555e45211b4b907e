"""libvirt's own word that a probe failed: its journal entries, from a trusted libvirt daemon only.

A probe that fails (rather than hangs) leaves no dir behind long enough to be seen; libvirt logs
each one (virQEMUCapsLogProbeFailure, MESSAGE_ID 8ae2f3fb-..., documented in libvirt's
docs/logging.rst) with the binary and QEMU's own words. Only journald's trusted fields decide
whose an entry is (`_UID` from the kernel's credentials, then `_COMM` and, on a systemd host,
`_SYSTEMD_UNIT`): anyone can log that MESSAGE_ID. A cursor and the failures still open are kept
in the state dir, so a restart neither repeats nor loses one; a read takes MAX_ENTRIES at most.
A failure is open until libvirt caches that binary's capabilities (its cache file, named by the
SHA-256 of the binary's path, appears), and one logged right after the watchdog ended a hung
probe is that hang's echo, not news.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass
from typing import AbstractSet, Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..config import Config
from ..problems import Problem
from ..state import StateError, StateStore
from .journal import JournalSource, open_reader

PROBE_FAILED_ID = "8ae2f3fb-2dbe-498e-8fbd-012d40afa361"
STATE_FILE = "libvirt-journal.json"
MAX_ENTRIES = 200  # read per call; more ask for another read
MAX_OPEN = 64  # binaries with an open failure, remembered at most
MAX_TEXT = 2048  # characters of libvirt's message kept
ECHO_S = 15.0  # seconds after the watchdog's own kill in which libvirt's failure entry is that kill's echo
SAID = "for probing: "  # where QEMU's own words begin in libvirt's message


@dataclass(frozen=True)
class ProbeFailure:
    """One failed probe of one binary, as libvirt logged it."""

    binary: str
    message: str  # libvirt's
    qemu_said: str  # QEMU's own stderr, as libvirt quoted it
    when: float  # the entry's wall time
    pid: int  # the libvirt daemon that logged it

    def to_json(self) -> Dict[str, object]:
        return {"binary": self.binary, "message": self.message, "qemu_said": self.qemu_said, "when": self.when}

    @classmethod
    def from_json(cls, data: Any) -> Optional[ProbeFailure]:
        try:
            return cls(str(data["binary"]), str(data["message"]), str(data["qemu_said"]), float(data["when"]), 0)
        except (KeyError, TypeError, ValueError):
            return None


def open_journal() -> Tuple[Optional[JournalSource], Optional[str]]:
    """systemd-python's reader on libvirt's probe-failure entries, or why there is none."""
    return open_reader("libvirt's probe-failure entries", MESSAGE_ID=PROBE_FAILED_ID)


@dataclass(frozen=True)
class Trust:
    """Whose entries count: a libvirt daemon's, of this uid (root; a session libvirt's user), in one of its units."""

    uid: int
    daemons: Tuple[str, ...]
    units: Optional[Tuple[str, ...]]  # None: no unit to check (no systemd, or a session libvirt)

    def why_not(self, entry: Mapping[str, Any]) -> Optional[str]:
        """None when a trusted libvirt daemon logged it; else why not (journald's fields, not the sender's words)."""
        if entry.get("_UID") != self.uid:
            return f"uid {entry.get('_UID')}"
        if entry.get("_COMM") not in self.daemons:
            return f"comm {entry.get('_COMM')!r}"
        if self.units is not None and entry.get("_SYSTEMD_UNIT") not in self.units:
            return f"unit {entry.get('_SYSTEMD_UNIT')!r}"
        if entry.get("_TRANSPORT") != "journal":
            return f"transport {entry.get('_TRANSPORT')!r}"
        return None


def trust_for(config: Config, systemd: bool) -> Trust:
    """root's libvirt daemons, in their units where systemd runs; for a session libvirt, its user's (the probe base's
    owner), wherever they run."""
    daemons = config.detect.libvirt_daemons
    if not config.libvirt.session_dirs:
        return Trust(0, daemons, tuple(f"{d}.service" for d in daemons) if systemd else None)
    try:
        uid = os.stat(config.libvirt.probe_dirs[0]).st_uid if config.libvirt.probe_dirs else -1
    except OSError:
        uid = -1  # nobody's entries count until the session's dir is there (the next reload looks again)
    return Trust(uid, daemons, None)


def cache_file(binary: str) -> str:
    """The name libvirt gives a binary's capabilities in its cache dir (virfilecache: SHA-256 of the path).

    >>> cache_file("/usr/bin/qemu-system-x86_64")
    '926803a9278e445ec919c2b6cbd8c1c449c75b26dcb1686b774314180376c725.xml'
    """
    return hashlib.sha256(binary.encode("utf-8", "surrogateescape")).hexdigest() + ".xml"


def failure_of(entry: Mapping[str, Any]) -> Optional[ProbeFailure]:
    binary = entry.get("LIBVIRT_QEMU_BINARY")
    message = entry.get("MESSAGE")
    if not isinstance(binary, str) or not binary or not isinstance(message, str):
        return None
    when = entry.get("__REALTIME_TIMESTAMP")
    stamp = when.timestamp() if isinstance(when, datetime.datetime) else 0.0  # systemd-python converts it
    said = message.split(SAID, 1)[1] if SAID in message else ""
    pid = entry.get("_PID")
    return ProbeFailure(binary[:4096], message[:MAX_TEXT], said[:MAX_TEXT], stamp, pid if isinstance(pid, int) else 0)


class ProbeFailures:
    """The monitor: libvirt's probe-failure entries read as they come, the failures still open, their cursor kept."""

    def __init__(self, source: Optional[JournalSource], trust: Trust, state: StateStore):
        self.source = source
        self.trust = trust
        self.state = state
        self.open: Dict[str, ProbeFailure] = {}
        self.refused = 0  # entries with libvirt's id from anyone else (counted, never acted on)
        self.more = False  # the last read stopped at MAX_ENTRIES
        self._cursor: Optional[str] = None
        self._dirty = False
        self._echoes: List[Tuple[float, float]] = []  # (from, to): wall times of the watchdog's own kills, and after
        self._load()

    def _load(self) -> None:
        saved = self.state.read_json(STATE_FILE)
        if isinstance(saved, dict):
            self._cursor = saved.get("cursor") if isinstance(saved.get("cursor"), str) else None
            for item in saved.get("open") or []:
                failure = ProbeFailure.from_json(item)
                if failure is not None:
                    self.open[failure.binary] = failure
            for pair in saved.get("echoes") or []:
                if isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, (int, float)) for t in pair):
                    self._echoes.append((float(pair[0]), float(pair[1])))
        if self.source is None:
            return
        if self._cursor is not None:
            self.source.seek_cursor(self._cursor)
            first = self.source.get_next()
            if first and not self.source.test_cursor(self._cursor):
                self._take(first)  # the saved entry was gone (rotated): this one is news
        else:
            self.source.seek_tail()  # first start: what was logged before is history, not news
            self.source.get_previous()

    def adopt(self, old: ProbeFailures) -> None:
        """After a reload: the old reader, where it was, and what is open (nothing read twice, nothing lost)."""
        if self.source is not None:
            self.source.close()
        self.source, self.open, self._cursor = old.source, old.open, old._cursor
        self._dirty, self._echoes, self.refused = old._dirty, old._echoes, old.refused

    def fileno(self) -> Optional[int]:
        return self.source.fileno() if self.source is not None else None

    def woken(self) -> bool:
        """The journal's fd was readable: consume the wake-up; True when entries were appended."""
        return self.source is not None and self.source.process() != 0

    def ended_a_probe(self, began: float, ended: float) -> None:
        """The watchdog ended a hung probe (wall times): libvirt's failure entry for it is not a new failure."""
        self._echoes = [(b, e) for b, e in self._echoes if e > ended - 3600][-16:] + [(began, ended + ECHO_S)]
        self._dirty = True  # kept with the cursor: a `remediate` that exits before libvirt's entry comes still counts

    def due(self, readable: AbstractSet[int]) -> bool:
        """Is there something to read (the journal's fd woke the loop, or the last read stopped at its cap)?"""
        return self.more or (self.source is not None and self.source.fileno() in readable and self.woken())

    def read(self) -> int:
        """New entries, MAX_ENTRIES at most; how many were libvirt's failures."""
        if self.source is None:
            return 0
        taken = 0
        for _ in range(MAX_ENTRIES):
            entry = self.source.get_next()
            if not entry:
                self.more = False
                return taken
            taken += self._take(entry)
        self.more = True
        return taken

    def _take(self, entry: Mapping[str, Any]) -> int:
        cursor = entry.get("__CURSOR")
        if isinstance(cursor, str):
            self._cursor, self._dirty = cursor, True
        failure = failure_of(entry)
        if failure is None:
            return 0
        if self.trust.why_not(entry) is not None:
            self.refused += 1
            return 0
        if any(began <= failure.when <= until for began, until in self._echoes):
            return 0
        if failure.binary not in self.open and len(self.open) >= MAX_OPEN:
            return 0
        self.open[failure.binary] = failure
        return 1

    def current(self, cache_entries: Optional[Sequence[str]]) -> Tuple[ProbeFailure, ...]:
        """The failures still open: a binary whose capabilities libvirt has cached since has been probed fine."""
        if cache_entries is not None:
            cached = set(cache_entries)
            for binary in [b for b in self.open if cache_file(b) in cached]:
                del self.open[binary]
                self._dirty = True
        return tuple(sorted(self.open.values(), key=lambda f: f.binary))

    def save(self) -> List[Problem]:
        """The cursor and the open failures, when they changed."""
        if not self._dirty:
            return []
        try:
            self.state.write_json(
                STATE_FILE,
                {
                    "cursor": self._cursor,
                    "open": [f.to_json() for f in self.open.values()],
                    "echoes": [list(pair) for pair in self._echoes],
                },
                durable=False,
            )
        except StateError as exc:
            return [exc.problem("; a restart may tell libvirt's probe failures again")]
        self._dirty = False
        return []
