"""A probe's pidfile, read as untrusted bytes: through its dir's fd, never a link, a fifo or more than 32 bytes.

libvirt writes qmp.pid in a dir the qemu user owns: whatever is there may be planted.
"""

from __future__ import annotations

import errno
import os
import stat

from .fsafe import READ_NOFOLLOW
from .model import PidfileRead

PIDFILE_NAME = "qmp.pid"
PIDFILE_MAX_BYTES = 32


def parse_pid(data: bytes, pid_max: int) -> PidfileRead:
    """A pid from a pidfile's bytes, or why it is not one.

    >>> parse_pid(b"1234\\n", 4194304)
    PidfileRead(pid=1234, problem=None)
    >>> parse_pid(b"", 4194304).problem
    'empty'
    >>> parse_pid(b"-5", 4194304).problem
    "not a process id: '-5'"
    >>> parse_pid(b"1", 4194304).problem
    'names PID 1'
    >>> parse_pid(b"99999999999", 4194304).problem
    'out of range: 99999999999 > pid_max 4194304'
    """
    text = data.strip()
    if not text:
        return PidfileRead(None, "empty")
    if not text.isdigit() or not text.isascii():
        shown = text[:16].decode("ascii", "backslashreplace")
        return PidfileRead(None, f"not a process id: {shown!r}")
    pid = int(text)
    if pid == 0:
        return PidfileRead(None, "not a process id: '0'")
    if pid == 1:
        return PidfileRead(None, "names PID 1")
    if pid > pid_max:
        return PidfileRead(None, f"out of range: {pid} > pid_max {pid_max}")
    return PidfileRead(pid)


def read_pidfile(dir_fd: int, pid_max: int, name: str = PIDFILE_NAME) -> PidfileRead:
    """Read a probe's pidfile relative to its (already verified) dir fd."""
    try:
        fd = os.open(name, READ_NOFOLLOW, dir_fd=dir_fd)
    except FileNotFoundError:
        return PidfileRead(None, "missing")
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # it is a symlink
            return PidfileRead(None, "is a symbolic link; not followed")
        return PidfileRead(None, f"cannot open: {exc.strerror}")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return PidfileRead(None, "not a regular file")
        if st.st_size > PIDFILE_MAX_BYTES:
            return PidfileRead(None, f"too large for a pidfile ({st.st_size} bytes)")
        data = os.read(fd, PIDFILE_MAX_BYTES + 1)
    except OSError as exc:
        return PidfileRead(None, f"cannot read: {exc.strerror}")
    finally:
        os.close(fd)
    if len(data) > PIDFILE_MAX_BYTES:
        return PidfileRead(None, "too large for a pidfile")
    return parse_pid(data, pid_max)


def read_pid_max(proc_root: str = "/proc") -> int:
    try:
        with open(os.path.join(proc_root, "sys/kernel/pid_max"), "rb") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 4194304  # the kernel's upper limit
