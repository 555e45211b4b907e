"""Files root acts on (the config, an operator's signature table): read only when nobody else could have written them.

root runs what a config says (`actions.restart_command`) and acts on what a signature table calls a cause,
so a file another uid can write is that uid's say over root. As sshd's StrictModes: the file and every dir
above it are owned by root (or by the user reading it) and writable by no one else; a sticky dir (/tmp),
where others cannot replace or remove what they do not own, is no such write. The file is opened without
following a link and without blocking on a FIFO or a device put in its place, and read up to a cap.
"""

from __future__ import annotations

import os
import stat
from typing import AbstractSet, List, Optional

from .fsafe import READ_NOFOLLOW, read_capped

_OPEN = READ_NOFOLLOW


class UntrustedFileError(ValueError):
    """The file may not be acted on; the message says why and what to do."""


def read_trusted(path: str, cap: int) -> bytes:
    """Up to cap bytes of path, once it and the dirs above it pass the rule (FileNotFoundError when absent)."""
    try:
        fd = os.open(path, _OPEN)
    except OSError as exc:
        if os.path.islink(path):
            raise UntrustedFileError(f"{path} is a symbolic link: give the file's own path") from None
        raise exc from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UntrustedFileError(f"{path} is not a regular file")
        why = _why_others_may_write(path, st, "root acts on what it says")
        if why:
            raise UntrustedFileError(why)
        return read_capped(fd, cap)
    finally:
        os.close(fd)


def why_untrusted_program(path: str) -> Optional[str]:
    """None when root may run path (a hook): an executable regular file that, and every dir above it, only root (or
    the reader) can write; else why not. Its links are followed, and the file they reach is what is judged."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode) or not st.st_mode & stat.S_IXUSR:
        return f"{path} is not an executable file"
    return _why_others_may_write(path, st, "root runs it")


def _why_others_may_write(path: str, st: os.stat_result, stake: str) -> Optional[str]:
    """Why someone but root (or the reader) could have written path (its stat `st`) or a dir above it; None: nobody.
    stake: what root does with it, for the words."""
    trusted = {0, os.geteuid()}
    why = _others_may_write(st, trusted, sticky_ok=False)
    if why:
        return f"{path} {why}: {stake}; chown root and chmod go-w it"
    for parent in _parents(path):
        why = _others_may_write(os.stat(parent), trusted, sticky_ok=True)
        if why:
            return f"{path} lies in {parent}, which {why}: whoever can write there can swap it"
    return None


def _parents(path: str) -> List[str]:
    """Every dir above path, as the kernel resolves it, up to /."""
    here = os.path.dirname(os.path.realpath(path))
    out = [here]
    while here != "/":
        here = os.path.dirname(here)
        out.append(here)
    return out


def _others_may_write(st: os.stat_result, trusted: AbstractSet[int], sticky_ok: bool) -> Optional[str]:
    if st.st_uid not in trusted:
        return f"is owned by uid {st.st_uid}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not (sticky_ok and st.st_mode & stat.S_ISVTX):
        return f"is writable by its group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None
