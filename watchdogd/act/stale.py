"""Removing a stale qmp-XXXXXX dir without ever following a link out of it.

Everything is done relative to directory fds opened with O_NOFOLLOW, the base
itself one component at a time from /: a symlink inside is unlinked (its target
untouched), a dir (or any part of the base's path) swapped for a symlink is refused,
a nested mount is not crossed, and the walk is bounded.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Optional, Sequence

from ..budget import Budget
from ..fsafe import BirthTime, open_dir_nofollow, open_path_nofollow
from ..safety import QMP_DIR

MAX_DEPTH = 4
MAX_ENTRIES = 10000


class RefusedError(Exception):
    """The dir is not one we may remove; the message says why."""


def check_removable(path: str, probe_dirs: Sequence[str]) -> None:
    base, name = os.path.split(path)
    if base not in probe_dirs:
        raise RefusedError(f"{path} is not directly under a configured probe dir")
    if not QMP_DIR.fullmatch(name):
        raise RefusedError(f"{name!r} is not a qmp-XXXXXX probe dir name")


def remove_probe_dir(path: str, probe_dirs: Sequence[str], birth: BirthTime, made: Optional[float] = None) -> int:
    """Remove path and what is inside it; the number of entries removed.

    `made`: the birth time of the dir that was judged stale; a dir with another
    one (renamed away and replaced since) is refused. FileNotFoundError when it is
    already gone; RefusedError when it may not be removed; OSError for anything
    else (with nothing outside the dir touched).
    """
    check_removable(path, probe_dirs)
    base, name = os.path.split(path)
    try:
        base_fd = open_path_nofollow(base)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise RefusedError(
                f"{base} is reached through a symbolic link (or is not a directory); nothing under it is removed"
            ) from None
        raise
    try:
        try:
            dir_fd = open_dir_nofollow(name, dir_fd=base_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise RefusedError(f"{path} is not a directory (a symlink?); not removed") from None
            raise
        try:
            if os.fstat(dir_fd).st_dev != os.fstat(base_fd).st_dev:
                raise RefusedError(f"{path} is a mount point; not removed")
            if made is not None and abs(birth.of_fd(dir_fd) - made) > 1e-6:
                raise RefusedError(f"{path} was replaced by another dir since it was found stale; not removed")
            removed = _empty(dir_fd, os.fstat(dir_fd).st_dev, 0, Budget(MAX_ENTRIES))
        finally:
            os.close(dir_fd)
        os.rmdir(name, dir_fd=base_fd)
        return removed + 1
    finally:
        os.close(base_fd)


def _empty(dir_fd: int, dev: int, depth: int, entries: Budget) -> int:
    removed = 0
    for entry in list(os.scandir(dir_fd)):
        if not entries.take():
            raise RefusedError(f"more than {MAX_ENTRIES} entries; not a probe dir")
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            if depth >= MAX_DEPTH:
                raise RefusedError(f"nested deeper than {MAX_DEPTH}; not a probe dir")
            if st.st_dev != dev:
                raise RefusedError(f"{entry.name} is a mount point; not removed")
            child = open_dir_nofollow(entry.name, dir_fd=dir_fd)
            try:
                removed += _empty(child, dev, depth + 1, entries)
            finally:
                os.close(child)
            os.rmdir(entry.name, dir_fd=dir_fd)
        else:
            os.unlink(entry.name, dir_fd=dir_fd)  # a symlink goes, its target stays
        removed += 1
    return removed
