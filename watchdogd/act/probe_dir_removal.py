"""Removing a stale qmp-XXXXXX dir: only one shaped as libvirt makes it, without ever following a link.

The probe base is the qemu user's dir, and a same-dir rename needs no write on the dir it
moves: that user can give root's own dirs (the VMs' nvram/, libvirt's snapshot/) a qmp-XXXXXX
name. So a name and an age are never enough: a dir is removed only when it is shaped as
libvirt leaves a probe's dir (owned by root or by the base's owner, as libvirt hands it over;
flat; at most the probe's own two entries, qmp.monitor a socket and qmp.pid a small file, of
those same owners). Anything else is reported and left. The listing stops at MAX_ENTRIES, so a
flooded dir costs a bounded read. Everything is done relative to directory fds opened with
O_NOFOLLOW, the base itself one component at a time from /: a dir (or any part of the base's
path) swapped for a symlink is refused, a mount point is not removed.
"""

from __future__ import annotations

import os
import stat
from typing import AbstractSet, List, Optional, Sequence

from ..fsafe import BirthTime, PathRefused, open_dir_nofollow, open_path_nofollow
from ..printable import printable
from ..safety import QMP_DIR

MAX_ENTRIES = 8  # listed at most (a probe's dir holds two): past it, not libvirt's
MAX_PIDFILE_BYTES = 4096
PROBE_ENTRIES = {"qmp.monitor": stat.S_IFSOCK, "qmp.pid": stat.S_IFREG}  # all a probe's dir ever holds


class RefusedError(Exception):
    """The dir is not one we may remove; the message says why."""


class NotLibvirtsError(RefusedError):
    """The dir is not shaped as libvirt makes a probe's: reported, never removed."""


def check_removable(path: str, probe_dirs: Sequence[str]) -> None:
    base, name = os.path.split(path)
    if base not in probe_dirs:
        raise RefusedError(f"{path} is not directly under a configured probe dir")
    if not QMP_DIR.fullmatch(name):
        raise RefusedError(f"{name!r} is not a qmp-XXXXXX probe dir name")


def remove_probe_dir(path: str, probe_dirs: Sequence[str], birth: BirthTime, made: Optional[float] = None) -> int:
    """Remove path and its qmp.monitor and qmp.pid (all a probe leaves); the number of entries removed.

    `made`: the birth time of the dir that was judged stale; a dir with another
    one (renamed away and replaced since) is refused. FileNotFoundError when it is
    already gone; RefusedError when it may not be removed (NotLibvirtsError: not shaped
    as a probe's); OSError for anything else (with nothing outside the dir touched).
    """
    check_removable(path, probe_dirs)
    base, name = os.path.split(path)
    try:
        base_fd = open_path_nofollow(base)
    except PathRefused:
        raise RefusedError(f"{base}: {PathRefused.WHY}; nothing under it is removed") from None
    try:
        try:
            dir_fd = open_dir_nofollow(name, dir_fd=base_fd)
        except PathRefused:
            raise RefusedError(f"{path} is not a directory (a symlink?); not removed") from None
        try:
            if os.fstat(dir_fd).st_dev != os.fstat(base_fd).st_dev:
                raise RefusedError(f"{path} is a mount point; not removed")
            if made is not None and abs(birth.of_fd(dir_fd) - made) > 1e-6:
                raise RefusedError(f"{path} was replaced by another dir since it was found stale; not removed")
            owners = {0, os.fstat(base_fd).st_uid}
            entries = probe_shaped(dir_fd, owners)
            for entry in entries:
                os.unlink(entry, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        os.rmdir(name, dir_fd=base_fd)
        return len(entries) + 1
    finally:
        os.close(base_fd)


def probe_shaped(dir_fd: int, owners: AbstractSet[int]) -> List[str]:
    """The entries of a dir shaped as libvirt leaves a probe's, else NotLibvirtsError saying how it is not."""
    st = os.fstat(dir_fd)
    if st.st_uid not in owners:
        raise NotLibvirtsError(f"owned by uid {st.st_uid}: libvirt leaves a probe's dir to root or the base's owner")
    names: List[str] = []
    with os.scandir(dir_fd) as listing:
        for entry in listing:  # read as it goes: a flood is never listed whole
            if len(names) == MAX_ENTRIES:
                raise NotLibvirtsError(f"more than {MAX_ENTRIES} entries; a probe's dir holds two")
            names.append(_probe_entry(entry, owners))
    return names


def _probe_entry(entry: os.DirEntry[str], owners: AbstractSet[int]) -> str:
    kind = PROBE_ENTRIES.get(entry.name)
    if kind is None:
        raise NotLibvirtsError(f"{printable(entry.name)!r} is nothing a probe makes (only qmp.monitor and qmp.pid)")
    st = entry.stat(follow_symlinks=False)
    if stat.S_IFMT(st.st_mode) != kind:
        raise NotLibvirtsError(f"{entry.name} is not a {'socket' if kind == stat.S_IFSOCK else 'regular file'}")
    if st.st_uid not in owners:
        raise NotLibvirtsError(f"{entry.name} is uid {st.st_uid}'s, not libvirt's or the probe's")
    if st.st_size > MAX_PIDFILE_BYTES or st.st_nlink > 1:
        raise NotLibvirtsError(f"{entry.name} is larger than a pidfile or has other links")
    return entry.name
