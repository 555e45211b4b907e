"""Following libvirt's per-domain QEMU logs from their end, bounded, never through a link.

Each NAME.log under libvirt.log_dir that exists at the first poll is read from where
it was then (old failures are not news); one that appears later (a new domain's
first start) from its start; then only what was added since, at most READ_CAP bytes a
file a scan and MAX_FILES files; a file that shrank (rotated, truncated) is read
again from its start. Returns the new complete lines per domain.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Dict, List, Optional, Tuple

from ..fsafe import open_path_nofollow

READ_CAP = 64 * 1024
MAX_FILES = 2000


class LogFollower:
    def __init__(self, log_dir: str, from_tail: bool = False):
        """from_tail: on first sight read a file's last READ_CAP bytes (for `diagnose`), not nothing (the daemon)."""
        self.log_dir = log_dir
        self.from_tail = from_tail
        self._baseline = True  # the first poll: what is there already is history
        self._at: Dict[str, Tuple[int, int]] = {}  # file name -> (inode, offset read to)
        self.problem: Optional[str] = None

    def poll(self) -> Dict[str, List[str]]:
        """New lines since the last poll, by domain name."""
        self.problem = None
        try:
            dir_fd = open_path_nofollow(self.log_dir)
        except FileNotFoundError:
            self._baseline = False  # no dir yet: every log that appears is new
            return {}
        except OSError as exc:
            self.problem = f"cannot read the QEMU log dir {self.log_dir}: {exc.strerror}"
            return {}
        out: Dict[str, List[str]] = {}
        seen = set()
        try:
            with os.scandir(dir_fd) as entries:
                for n, entry in enumerate(entries):
                    if n >= MAX_FILES:
                        break
                    if not entry.name.endswith(".log"):
                        continue
                    seen.add(entry.name)
                    lines = self._new_lines(dir_fd, entry.name)
                    if lines:
                        out[entry.name[: -len(".log")]] = lines
        finally:
            os.close(dir_fd)
        self._at = {k: v for k, v in self._at.items() if k in seen}
        self._baseline = False
        return out

    def _new_lines(self, dir_fd: int, name: str) -> List[str]:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ELOOP):
                self.problem = f"cannot read {os.path.join(self.log_dir, name)}: {exc.strerror}"
            return []
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return []
            tail = max(0, st.st_size - READ_CAP)
            first = (tail if self.from_tail else st.st_size) if self._baseline else tail  # there before us: from the end; new: from its start
            inode, offset = self._at.get(name, (st.st_ino, first))
            if inode != st.st_ino or st.st_size < offset:
                offset = 0  # rotated or truncated: the new file from its start
            if st.st_size == offset:
                self._at[name] = (st.st_ino, offset)
                return []
            data = os.pread(fd, min(READ_CAP, st.st_size - offset), offset)
        finally:
            os.close(fd)
        complete = data.rfind(b"\n") + 1
        if complete == 0 and len(data) < READ_CAP:
            self._at[name] = (st.st_ino, offset)  # a line still being written: next time
            return []
        used = complete or len(data)
        self._at[name] = (st.st_ino, offset + used)
        return data[:used].decode("utf-8", "replace").splitlines()
