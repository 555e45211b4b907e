"""The capabilities cache, read-only: its entries and who could swap it, through one fd opened without following
links."""

from __future__ import annotations

import os
from typing import List, Optional, Tuple

from ..fsafe import PathRefused, non_root_writers, open_path_nofollow

CACHE_NAMES_KEPT = 256  # cache entries listed by name; past it only counted


def cache_entries(path: str, errors: List[str]) -> Tuple[Optional[Tuple[str, ...]], Optional[int]]:
    """The cache's entries (the first CACHE_NAMES_KEPT) and its owner; None when unreadable (the reason in errors)."""
    try:
        fd = open_path_nofollow(path)
    except FileNotFoundError:
        return (), None
    except PathRefused:
        errors.append(f"cache dir {path} refused: {PathRefused.WHY}")
        return None, None
    except OSError as exc:
        errors.append(f"cannot read cache dir {path}: {exc.strerror}")
        return None, None
    try:
        # who could swap it: its owner, or a qemu user owning a dir on the way (libvirt < 7.8)
        writers = non_root_writers(path) or ()
        owner = writers[0] if writers else os.fstat(fd).st_uid
        names: List[str] = []
        with os.scandir(fd) as entries:
            for entry in entries:
                if entry.name.endswith(".xml") and len(names) < CACHE_NAMES_KEPT:
                    names.append(entry.name)
        return tuple(sorted(names)), owner
    except OSError as exc:
        errors.append(f"cannot read cache dir {path}: {exc.strerror}")
        return None, None
    finally:
        os.close(fd)
