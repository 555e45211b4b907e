"""File system reads that a hostile probe dir cannot turn against root.

The probe dirs belong to the qemu user. Whoever controls that user can plant a
symlink, a fifo or a huge file where qmp.pid should be; nothing here follows a
link, blocks, or reads more than a few bytes.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
from dataclasses import dataclass
from typing import List, Optional, Set, Tuple

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# a file read that never follows a link (ELOOP), never waits on a FIFO's writer and never takes a terminal: how every
# file someone else could have put in place is opened
READ_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class PathRefused(OSError):
    """A path root will not go through: a part of it is a symbolic link or not a directory (ELOOP, ENOTDIR).

    Raised by the two openers below in place of those errnos, so every caller names the refusal in the same words."""

    WHY = "a part of its path is a symbolic link or not a directory"


def _refused(exc: OSError, path: str) -> OSError:
    return PathRefused(exc.errno, PathRefused.WHY, path) if exc.errno in (errno.ELOOP, errno.ENOTDIR) else exc


def open_dir_nofollow(path: str, dir_fd: Optional[int] = None) -> int:
    """An fd for a directory that is not a symlink (PathRefused otherwise)."""
    try:
        return os.open(path, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise _refused(exc, path) from None


def libc() -> ctypes.CDLL:
    """The C library, for the few calls Python has no wrapper for (statx, inotify, prctl): one way to load it."""
    return ctypes.CDLL(None, use_errno=True)


def open_path_nofollow(path: str) -> int:
    """An fd for the directory at an absolute path, opened one component at a time, none a symlink.

    O_NOFOLLOW only guards the last component of a path; a symlink planted higher up
    (say, a user-owned part of a probe dir) would still be followed. Walking from /
    with openat() and O_NOFOLLOW on every step refuses it (PathRefused).
    """
    if not os.path.isabs(path):
        raise ValueError(f"not an absolute path: {path!r}")
    fd = os.open("/", _DIR_FLAGS)
    try:
        for part in [p for p in path.split("/") if p and p != "."]:
            if part == "..":
                raise OSError(errno.EINVAL, "'..' in a path root acts on", path)
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise _refused(exc, path) from None
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass(frozen=True)
class PathVerdict:
    """Whether a path is safe for root to act under, and if not, why (the first reason found)."""

    ok: bool
    why: str = ""
    owner: Optional[int] = None  # the uid that owns the path itself (None: it does not exist yet)


def _writers(st: os.stat_result, next_owner: Optional[int]) -> Tuple[Optional[int], ...]:
    """Who (besides root) could replace an entry of a dir with this stat; None stands for 'any user'."""
    out: List[Optional[int]] = [st.st_uid]
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        if st.st_mode & stat.S_ISVTX and next_owner is not None:
            out.append(next_owner)  # sticky: only the entry's owner (or the dir's) may rename it
        elif st.st_mode & stat.S_IWOTH or st.st_gid != 0:
            out.append(None)
    return tuple(out)


def _lstat_chain(path: str) -> Tuple[List[Tuple[str, os.stat_result]], Optional[str]]:
    """(dir, lstat) from / down to path's deepest existing part; or why the walk was refused."""
    chain: List[Tuple[str, os.stat_result]] = [("/", os.lstat("/"))]
    for part in [p for p in path.split("/") if p]:
        here = os.path.join(chain[-1][0], part)
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            break
        except OSError as exc:
            return chain, f"cannot inspect {here}: {exc.strerror}"
        if stat.S_ISLNK(st.st_mode):
            return chain, f"{here} is a symbolic link; root does not follow links it did not make"
        if not stat.S_ISDIR(st.st_mode):
            return chain, f"{here} is not a directory"
        chain.append((here, st))
    return chain, None


def _judge_step(
    here: str, st: os.stat_result, nxt: Optional[int], owner: Optional[int], session_owner_ok: bool
) -> Optional[str]:
    """Why the dir `here` (holding a component owned by `nxt`; None: it is the last) is unsafe, or None."""
    if nxt is not None and st.st_uid != 0 and not session_owner_ok:
        why = f"{here} belongs to uid {st.st_uid}, not root: that user could swap what lies below it"
        return why + " (set libvirt.session_dirs: true for a session libvirt)"
    for writer in _writers(st, nxt):
        if writer is None:
            return f"{here} is writable by users other than its owner (mode {stat.S_IMODE(st.st_mode):04o})"
        if writer != 0 and nxt is not None and writer != nxt and not (writer == owner and session_owner_ok):
            return f"{here} is writable by uid {writer}, who does not own what lies below it"
    return None


def check_path(path: str, session_owner_ok: bool) -> PathVerdict:
    """May root act inside `path`? No component a symlink, none replaceable by a less trusted user.

    Each directory on the way must be writable only by root or by the owner of the
    next component (a user can only rename what sits in a dir it can write). Without
    session_owner_ok every component but the last must be root's own; with it (a
    session libvirt) they may also belong to one ordinary user, the one that owns the
    path. A path that does not exist yet is judged by its deepest existing part.
    """
    chain, refused = _lstat_chain(path)
    if refused:
        return PathVerdict(False, refused)
    exists = len(chain) == len([p for p in path.split("/") if p]) + 1
    owner = chain[-1][1].st_uid if exists else None
    users = sorted({st.st_uid for _, st in chain[1:] if st.st_uid != 0})
    if len(users) > 1:
        return PathVerdict(
            False, f"{path} passes through dirs of more than one user (uids {', '.join(map(str, users))})"
        )
    for index, (here, st) in enumerate(chain):
        nxt = chain[index + 1][1].st_uid if index + 1 < len(chain) else None
        why = _judge_step(here, st, nxt, owner, session_owner_ok)
        if why:
            return PathVerdict(False, why)
    last_here, last = chain[-1]
    if not exists and last.st_uid != 0 and not session_owner_ok:
        return PathVerdict(
            False,
            f"{last_here} belongs to uid {last.st_uid}, not root, and {path} does not exist yet: that user could make "
            "it a link",
        )
    return PathVerdict(True, owner=owner)


def non_root_writers(path: str) -> Optional[Tuple[int, ...]]:
    """The uids besides root that could change what lies at or below `path` (-1: any user); None when a part is a link
    or no dir.

    Judged on the deepest part that exists: whoever may write there could make the rest.
    For a dir root opens only one component at a time without following links, and whose
    findings it takes as proof only when this is empty (libvirt < 7.8's cache dir, the qemu user's).
    """
    chain, refused = _lstat_chain(path)
    if refused:
        return None
    found: Set[int] = set()
    for index, (_, st) in enumerate(chain):
        nxt = chain[index + 1][1].st_uid if index + 1 < len(chain) else None
        found.update(-1 if w is None else w for w in _writers(st, nxt) if w != 0)
    return tuple(sorted(found))


def check_dir_without_links(path: str) -> Optional[str]:
    """Why root may not write files in the dir `path` through a dir fd, or None: every component a real dir, none a
    link.

    Who may write the dir does not matter to a writer that never follows a link: a temp file
    made with O_EXCL|O_NOFOLLOW, fchmod on its fd, renameat within the dir fd (the metrics
    textfile in node_exporter's dir, which Debian gives to the prometheus user's tree).
    """
    chain, refused = _lstat_chain(path)
    if refused:
        return refused
    if len(chain) != len([p for p in path.split("/") if p]) + 1:
        return f"{path} does not exist"
    return None


def write_file_in(directory: str, name: str, data: bytes, mode: int = 0o644) -> None:
    """Replace directory/name whole or not at all, through the dir's fd, never following a link.

    The dir is opened one component at a time without links; the temp file is made in it with
    O_EXCL|O_NOFOLLOW (a name nobody else can have made), its mode set with fchmod on the fd
    (never chmod by path: a user who can write the dir could swap the name for a link to a
    root file), then renamed over `name` within the same dir fd.
    """
    dir_fd = open_path_nofollow(directory)
    tmp = f".{name}.{os.urandom(6).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    finally:
        os.close(dir_fd)


def read_capped(fd: int, cap: int) -> bytes:
    """Read fd to its end, but never more than cap bytes."""
    chunks: List[bytes] = []
    size = 0
    while size < cap:
        chunk = os.read(fd, min(65536, cap - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def try_flock(path: str) -> Optional[int]:
    """An exclusive flock on path (made 0600, never through a symlink): its fd, or None while another holds it.

    OSError when the file cannot be opened at all.
    """
    return _flock_or_close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600))


def _flock_or_close(fd: int) -> Optional[int]:
    """fd, exclusively flocked; or None (fd closed) while another holds the lock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def try_flock_dir(path: str) -> Optional[int]:
    """An exclusive flock on a directory itself (no file is made): its fd, or None while another holds it.

    `check` takes the host's latency lock this way, so a read-only look creates
    nothing in the state dir. OSError when the dir cannot be opened.
    """
    return _flock_or_close(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC))


class _StatxTimestamp(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_uint32), ("reserved", ctypes.c_int32)]


class _Statx(ctypes.Structure):
    _fields_ = [
        ("stx_mask", ctypes.c_uint32),
        ("stx_blksize", ctypes.c_uint32),
        ("stx_attributes", ctypes.c_uint64),
        ("stx_nlink", ctypes.c_uint32),
        ("stx_uid", ctypes.c_uint32),
        ("stx_gid", ctypes.c_uint32),
        ("stx_mode", ctypes.c_uint16),
        ("spare0", ctypes.c_uint16),
        ("stx_ino", ctypes.c_uint64),
        ("stx_size", ctypes.c_uint64),
        ("stx_blocks", ctypes.c_uint64),
        ("stx_attributes_mask", ctypes.c_uint64),
        ("stx_atime", _StatxTimestamp),
        ("stx_btime", _StatxTimestamp),
        ("stx_ctime", _StatxTimestamp),
        ("stx_mtime", _StatxTimestamp),
        ("spare", ctypes.c_uint64 * 16),
    ]


# The kernel writes the whole struct: a short buffer here is heap corruption.
assert ctypes.sizeof(_Statx) == 256, ctypes.sizeof(_Statx)


_STATX_BTIME = 0x800
_AT_SYMLINK_NOFOLLOW = 0x100
_AT_EMPTY_PATH = 0x1000


class BirthTime:
    """When a file was made: statx's birth time where libc and the fs have one.

    Without it (old glibc, a file system that keeps none) the earlier of mtime and
    ctime stands in; that is never earlier than the real birth, so a check of
    "process started no earlier than its dir" can only get stricter, never looser.
    """

    def __init__(self) -> None:
        self._statx = getattr(libc(), "statx", None)  # glibc >= 2.28
        if self._statx is not None:
            self._statx.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_Statx)]
            self._statx.restype = ctypes.c_int

    def of_fd(self, fd: int) -> float:
        if self._statx is not None:
            buf = _Statx()
            if self._statx(fd, b"", _AT_EMPTY_PATH | _AT_SYMLINK_NOFOLLOW, _STATX_BTIME, ctypes.byref(buf)) == 0:
                if buf.stx_mask & _STATX_BTIME:
                    return float(buf.stx_btime.tv_sec + buf.stx_btime.tv_nsec / 1e9)
        st = os.fstat(fd)
        return min(st.st_mtime, st.st_ctime)
