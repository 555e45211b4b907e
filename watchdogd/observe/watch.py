"""A cheap wake-up when a qmp-XXXXXX dir appears or goes, or a domain's QEMU log grows: inotify, else a 1 s listdir
poll.

The daemon's full scan runs every `interval`; this is what lets it see a new probe
(and set that probe's deadline timer) or a finished one (and resolve its finding)
at once instead, and read a VM's start-up failure within a second of its log line.
inotify is reached through ctypes (glibc has had the calls since 2.4; no extra
package on RHEL 9 or openEuler); where it cannot be had (no syscall,
max_user_instances reached) a short listdir poll does the probe dirs' job, and the
logs are read at full scans only.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass
from typing import Dict, FrozenSet, Optional, Sequence

from ..fsafe import libc
from ..safety import QMP_DIR

IN_MODIFY = 0x00000002
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
MASK = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
LOG_MASK = IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
_HEADER = struct.Struct("iIII")
POLL_INTERVAL = 1.0


class _Inotify:
    def __init__(self) -> None:
        c = libc()
        self._add = c.inotify_add_watch
        self._add.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        self._rm = c.inotify_rm_watch
        self._rm.argtypes = (ctypes.c_int, ctypes.c_int)
        fd = c.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self.fd: int = fd

    def add(self, path: str, mask: int = MASK) -> int:
        wd = int(self._add(self.fd, os.fsencode(path), mask))
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
        return wd

    def remove(self, wd: int) -> None:
        if self._rm(self.fd, wd) < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def read(self) -> bytes:
        chunks = []
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        os.close(self.fd)


@dataclass(frozen=True)
class Changes:
    """What came or went since the last look."""

    probes: bool = False  # a qmp-XXXXXX dir appeared or went (or events were lost)
    logs: bool = False  # a domain's NAME.log was written to or appeared


class DirWatch:
    def __init__(self, dirs: Sequence[str], use_inotify: bool = True, log_dir: Optional[str] = None):
        """dirs: the probe bases; log_dir: libvirt's per-domain QEMU logs (inotify only: else the scan reads them)."""
        self.dirs = tuple(dirs)
        self.log_dir = log_dir
        self.why_polling: Optional[str] = None
        self._inotify: Optional[_Inotify] = None
        self._wds: Dict[int, str] = {}
        self._log_wd: Optional[int] = None
        self._log_parent_wd: Optional[int] = None  # while the log dir does not exist yet: its parent, to see it made
        self._listing: Dict[str, FrozenSet[str]] = {}
        if use_inotify:
            try:
                self._inotify = _Inotify()
            except (OSError, AttributeError) as exc:  # AttributeError: a libc without the call
                self.why_polling = f"inotify unavailable ({exc}); polling the probe dirs every {POLL_INTERVAL:g}s"
        else:
            self.why_polling = f"polling the probe dirs every {POLL_INTERVAL:g}s"
        self.refresh()

    def fileno(self) -> Optional[int]:
        return self._inotify.fd if self._inotify is not None else None

    @property
    def poll_interval(self) -> Optional[float]:
        """How often the loop must call changed() when there is no fd to wait on."""
        return POLL_INTERVAL if self._inotify is None else None

    @property
    def watching_logs(self) -> bool:
        return self._log_wd is not None

    def refresh(self) -> None:
        """Watch every probe dir (and the log dir) that exists now (they may appear after the daemon starts)."""
        if self._inotify is None:
            self._listing = {d: self._qmp_names(d) for d in self.dirs}
            return
        self._watch_logs()
        watched = set(self._wds.values())
        for d in self.dirs:
            if d in watched:
                continue
            try:
                self._wds[self._inotify.add(d)] = d
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                    # ENOSPC: max_user_watches reached; the interval scan still covers it
                    self.why_polling = f"cannot watch {d}: {exc.strerror}"

    def _watch_logs(self) -> None:
        """Watch the log dir; while it does not exist (libvirt makes it at a domain's first start), its parent."""
        if self._inotify is None or self.log_dir is None or self._log_wd is not None or self.log_dir in self.dirs:
            return
        try:
            self._log_wd = self._inotify.add(self.log_dir, LOG_MASK)
        except OSError as exc:
            parent = os.path.dirname(self.log_dir)
            if exc.errno == errno.ENOENT and self._log_parent_wd is None and parent not in self.dirs:
                try:
                    self._log_parent_wd = self._inotify.add(parent, IN_CREATE | IN_MOVED_TO | IN_ONLYDIR)
                except OSError:
                    pass  # no parent either, or no watch left: the scans read the logs meanwhile
            return
        if self._log_parent_wd is not None:
            try:
                self._inotify.remove(self._log_parent_wd)
            except OSError:
                pass
            self._log_parent_wd = None

    def changed(self) -> Changes:
        """Did a qmp-XXXXXX dir come or go, or a log grow, since the last call? Drains pending events."""
        if self._inotify is None:
            before = self._listing
            self._listing = {d: self._qmp_names(d) for d in self.dirs}
            return Changes(probes=before != self._listing)
        probes = logs = False
        data = self._inotify.read()
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            name = data[offset + _HEADER.size : offset + _HEADER.size + length].rstrip(b"\0")
            offset += _HEADER.size + length
            seen = self._event(wd, mask, os.fsdecode(name))
            probes, logs = probes or seen.probes, logs or seen.logs
        return Changes(probes, logs)

    def _event(self, wd: int, mask: int, name: str) -> Changes:
        """What one inotify event means."""
        if mask & IN_Q_OVERFLOW:
            return Changes(True, True)  # events were lost: look at everything
        if wd == self._log_parent_wd:
            if mask & IN_IGNORED:
                self._log_parent_wd = None
            elif name == os.path.basename(self.log_dir or ""):
                self._watch_logs()  # the log dir was made: watch it, and read what it already holds
                return Changes(logs=True)
            return Changes()
        if wd == self._log_wd:
            if mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF):
                self._log_wd = None  # the log dir itself went; refresh() watches it again
            return Changes(logs=name.endswith(".log") or not name)
        if wd not in self._wds:
            return Changes()  # a watch already given up (the log dir's parent, once the log dir was made)
        if mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF):
            self._wds.pop(wd, None)  # the dir itself went; refresh() watches it again when it is back
            return Changes(probes=True)
        return Changes(probes=bool(QMP_DIR.fullmatch(name)))

    @staticmethod
    def _qmp_names(d: str) -> FrozenSet[str]:
        try:
            return frozenset(n for n in os.listdir(d) if QMP_DIR.fullmatch(n))
        except OSError:
            return frozenset()

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
