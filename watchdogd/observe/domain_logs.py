"""The domain-log monitor: libvirt's per-domain QEMU logs followed from their end, bounded, never through a link.

Each NAME.log under libvirt.log_dir that exists at the first poll is read from where
it was then (old failures are not news); one that appears later (a new domain's
first start) from its start; then only what was added since. Bounded whatever the
guests write: at most READ_CAP bytes a file and POLL_BUDGET bytes in all per poll
(what is left is read by the next poll, from where this one stopped, files taken in
turn so one chatty log cannot starve the others), at most MAX_FILES `.log` files
followed (rotated `NAME.log.N` files are never counted or read), said once when
reached. A file that shrank (rotated, truncated) is read again from its start.
Its result, DomainLines, is the new complete lines per domain; diagnose.vm_starts reads them.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Dict, List, Tuple

from ..fsafe import READ_NOFOLLOW, open_path_nofollow
from ..printable import printable
from ..problems import Problems

READ_CAP = 64 * 1024
POLL_BUDGET = 128 * 1024
MAX_FILES = 2000
SUFFIX = ".log"

DomainLines = Dict[str, List[str]]  # domain name -> the complete lines its log gained since the last poll


class DomainLogs:
    def __init__(self, log_dir: str, problems: Problems, from_tail: bool = False):
        """from_tail: on first sight read a file's last READ_CAP bytes (for `diagnose`), not nothing (the daemon).

        problems: where a log dir or file that cannot be read, or too many logs, is told."""
        self.log_dir = log_dir
        self.from_tail = from_tail
        self._baseline = True  # the first poll: what is there already is history
        self._at: Dict[str, Tuple[int, int]] = {}  # file name -> (inode, offset read to)
        self._turn = ""  # the file the next poll starts at (the one after where the budget ran out)
        self.problems = problems

    def poll(self) -> DomainLines:
        """New lines since the last poll, by domain name."""
        try:
            dir_fd = open_path_nofollow(self.log_dir)
        except FileNotFoundError:
            self._baseline = False  # no dir yet: every log that appears is new
            return {}
        except OSError as exc:
            self.problems.add(f"cannot read the QEMU log dir {self.log_dir}: {exc.strerror}", f"logs:{self.log_dir}")
            return {}
        out: Dict[str, List[str]] = {}
        try:
            names = self._names(dir_fd)
            start = next((i for i, n in enumerate(names) if n >= self._turn), 0)
            budget = POLL_BUDGET
            for index in range(len(names)):
                name = names[(start + index) % len(names)]
                if budget <= 0:
                    self._turn = name
                    break
                lines, used = self._new_lines(dir_fd, name, budget)
                budget -= used
                if lines:
                    out[printable(name[: -len(SUFFIX)])] = lines  # a file name is any bytes a session user chose
            else:
                self._turn = ""
        finally:
            os.close(dir_fd)
        seen = set(names)
        self._at = {k: v for k, v in self._at.items() if k in seen}
        self._baseline = False
        return out

    def _names(self, dir_fd: int) -> List[str]:
        """The NAME.log files, sorted, at most MAX_FILES (a problem said when there are more)."""
        names: List[str] = []
        more = False
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                if not entry.name.endswith(SUFFIX):
                    continue  # NAME.log.1, .gz: rotated, history
                if len(names) >= MAX_FILES:
                    more = True
                    break
                names.append(entry.name)
        if more:
            followed = f"only {MAX_FILES} are followed for start-up failures"
            self.problems.add(
                f"more than {MAX_FILES} QEMU logs in {self.log_dir}: {followed}", f"logs-many:{self.log_dir}"
            )
        return sorted(names)

    def _new_lines(self, dir_fd: int, name: str, budget: int) -> Tuple[List[str], int]:
        """The new complete lines of one log, and the bytes read."""
        try:
            fd = os.open(name, READ_NOFOLLOW, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ELOOP):
                path = os.path.join(self.log_dir, name)
                self.problems.add(f"cannot read {path}: {exc.strerror}", f"logs:{path}")
            return [], 0
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return [], 0
            tail = max(0, st.st_size - READ_CAP)
            # there before us: from the end; new: from its start
            first = (tail if self.from_tail else st.st_size) if self._baseline else tail
            inode, offset = self._at.get(name, (st.st_ino, first))
            if inode != st.st_ino or st.st_size < offset:
                offset = 0  # rotated or truncated: the new file from its start
            if st.st_size == offset:
                self._at[name] = (st.st_ino, offset)
                return [], 0
            cap = min(READ_CAP, budget)
            data = os.pread(fd, min(cap, st.st_size - offset), offset)
        finally:
            os.close(fd)
        complete = data.rfind(b"\n") + 1
        if complete == 0 and len(data) < READ_CAP:
            self._at[name] = (st.st_ino, offset)  # a line still being written (or cut by the budget): next time
            return [], len(data)
        used = complete or len(data)
        self._at[name] = (st.st_ino, offset + used)
        # a blank line says nothing
        return [line for line in data[:used].decode("utf-8", "replace").splitlines() if line.strip()], len(data)
