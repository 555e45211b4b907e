"""A cheap wake-up when a qmp-XXXXXX dir appears or goes: inotify, else a 1 s listdir poll.

The daemon's full scan runs every `interval`; this is what lets it see a new probe
(and set that probe's deadline timer) or a finished one (and resolve its finding)
at once instead. inotify is reached through ctypes (glibc has had the calls since
2.4; no extra package on RHEL 9 or openEuler); where it cannot be had (no syscall,
max_user_instances reached) a short listdir poll does the same job.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from typing import Dict, FrozenSet, Optional, Sequence

from ..fsafe import libc
from ..safety import QMP_DIR

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

    def add(self, path: str) -> int:
        wd = int(self._add(self.fd, os.fsencode(path), MASK))
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
        return wd

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


class DirWatch:
    def __init__(self, dirs: Sequence[str], use_inotify: bool = True):
        self.dirs = tuple(dirs)
        self.why_polling: Optional[str] = None
        self._inotify: Optional[_Inotify] = None
        self._wds: Dict[int, str] = {}
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

    def refresh(self) -> None:
        """Watch every probe dir that exists now (they may appear after the daemon starts)."""
        if self._inotify is None:
            self._listing = {d: self._qmp_names(d) for d in self.dirs}
            return
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

    def changed(self) -> bool:
        """Did a qmp-XXXXXX dir come or go since the last call? Drains pending events."""
        if self._inotify is None:
            before = self._listing
            self._listing = {d: self._qmp_names(d) for d in self.dirs}
            return before != self._listing
        data = self._inotify.read()
        seen = False
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            name = data[offset + _HEADER.size : offset + _HEADER.size + length].rstrip(b"\0")
            offset += _HEADER.size + length
            if mask & IN_Q_OVERFLOW:
                seen = True
            elif mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF):
                self._wds.pop(wd, None)  # the dir itself went; refresh() watches it again when it is back
                seen = True
            elif QMP_DIR.fullmatch(os.fsdecode(name)):
                seen = True
        return seen

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
