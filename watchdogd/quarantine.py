"""Quarantining libvirt's capabilities cache: moved aside, never deleted, never half-lost.

Each entry moves to state_dir/quarantine/<UTC time>/ by rename where the two are on
one file system; across file systems it is copied, fsynced, checked and only then
removed from the cache. A manifest with each file's sha256 lets an operator verify
and put it back. The newest `keep` sets are kept.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
from dataclasses import dataclass, field
from typing import Callable, List

from .timefmt import compact_utc


@dataclass
class QuarantineResult:
    dest: str
    moved: List[str] = field(default_factory=list)
    failed: List[str] = field(default_factory=list)  # "name: why", the entry left in place
    pruned: List[str] = field(default_factory=list)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_then_remove(src: str, dst: str) -> None:
    """Across file systems: the cache entry is removed only once its copy is durable and equal."""
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())
    if _sha256(src) != _sha256(dst):
        os.unlink(dst)
        raise OSError(errno.EIO, "the copy differs from the original")
    shutil.copystat(src, dst, follow_symlinks=False)
    os.unlink(src)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def quarantine_cache(cache_dir: str, quarantine_root: str, keep: int, now: float, on_move: Callable[[str], None] = lambda _n: None) -> QuarantineResult:
    """Move every regular file of cache_dir into a new quarantine set."""
    dest = os.path.join(quarantine_root, compact_utc(now))
    result = QuarantineResult(dest=dest)
    try:
        names = sorted(os.listdir(cache_dir))
    except FileNotFoundError:
        names = []
    entries = [n for n in names if stat.S_ISREG(os.lstat(os.path.join(cache_dir, n)).st_mode)]
    if not entries:
        return result
    os.makedirs(dest, mode=0o700)
    manifest = {}
    for name in entries:
        src, dst = os.path.join(cache_dir, name), os.path.join(dest, name)
        try:
            digest = _sha256(src)
            try:
                os.rename(src, dst)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                _copy_then_remove(src, dst)
            manifest[name] = {"sha256": digest, "size": os.stat(dst).st_size}
            result.moved.append(name)
            on_move(name)
        except OSError as exc:
            result.failed.append(f"{name}: {exc.strerror or exc}")
    try:
        with open(os.path.join(dest, "MANIFEST.json"), "w") as f:
            json.dump({"from": cache_dir, "files": manifest}, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(dest)
        _fsync_dir(cache_dir)
    except OSError as exc:
        result.failed.append(f"MANIFEST.json: {exc.strerror or exc}")
    result.pruned = prune(quarantine_root, keep)
    return result


def prune(quarantine_root: str, keep: int) -> List[str]:
    """Remove the oldest quarantine sets beyond `keep` (their names sort by time)."""
    try:
        names = os.listdir(quarantine_root)
        sets = sorted(n for n in names if stat.S_ISDIR(os.lstat(os.path.join(quarantine_root, n)).st_mode))
    except FileNotFoundError:
        return []
    old = sets[:-keep] if len(sets) > keep else []
    for name in old:
        shutil.rmtree(os.path.join(quarantine_root, name))
    return old
