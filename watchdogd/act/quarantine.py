"""Quarantining libvirt's capabilities cache: moved aside, never deleted, never half-lost.

Each entry moves to state_dir/quarantine/<UTC time>/ by renameat() between two
directory fds where the two are on one file system; across file systems it is
copied, fsynced, checked and only then removed from the cache. The cache dir is
opened one component at a time without following links, so a cache dir (or a
part of its path) swapped for a symlink is refused, never followed into a root-only
dir; only regular files are moved, never through a link, and only as many and as large as
libvirt's own entries could be (the dir is the qemu user's on libvirt before 7.8). A manifest with each
file's sha256 lets an operator verify and put it back. The newest `keep` sets are
kept, and the set just made is never among those pruned, whatever the clock did.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
from dataclasses import dataclass, field
from typing import List

from ..fsafe import READ_NOFOLLOW, open_dir_nofollow, open_path_nofollow
from ..timefmt import compact_utc

_READ = READ_NOFOLLOW
# libvirt's entries are a few hundred KiB each, a dozen at most; on libvirt < 7.8 the dir is the
# qemu user's, who could fill it: past these bounds, entries are left in place and said so
MAX_ENTRY_BYTES = 64 << 20
MAX_ENTRIES = 1024


@dataclass
class QuarantineResult:
    dest: str
    moved: List[str] = field(default_factory=list)
    failed: List[str] = field(default_factory=list)  # "name: why", the entry left in place
    pruned: List[str] = field(default_factory=list)


def _sha256_at(dir_fd: int, name: str) -> str:
    digest = hashlib.sha256()
    fd = os.open(name, _READ, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_then_remove(src_fd: int, dst_fd: int, name: str, digest: str) -> None:
    """Across file systems: the cache entry is removed only once its copy is durable and equal."""
    fin = os.fdopen(os.open(name, _READ, dir_fd=src_fd), "rb")
    created = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    with fin, os.fdopen(os.open(name, created, 0o600, dir_fd=dst_fd), "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())
        st = os.fstat(fin.fileno())
        os.utime(fout.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
    if _sha256_at(dst_fd, name) != digest:
        os.unlink(name, dir_fd=dst_fd)
        raise OSError(errno.EIO, "the copy differs from the original")
    os.unlink(name, dir_fd=src_fd)


def _new_set(root_fd: int, base_name: str) -> str:
    """A fresh set dir under the quarantine root; a suffix when the clock gave a name already used."""
    for n in range(1000):
        name = base_name if n == 0 else f"{base_name}-{n}"
        try:
            os.mkdir(name, 0o700, dir_fd=root_fd)
            return name
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, f"no free quarantine set name for {base_name}")


def quarantine_cache(cache_dir: str, quarantine_root: str, keep: int, now: float) -> QuarantineResult:
    """Move every regular file of cache_dir into a new quarantine set."""
    try:
        cache_fd = open_path_nofollow(cache_dir)
    except FileNotFoundError:
        return QuarantineResult(dest=os.path.join(quarantine_root, compact_utc(now)))
    try:
        with os.scandir(cache_fd) as it:
            entries = sorted(e.name for e in it if e.is_file(follow_symlinks=False))
        if not entries:
            return QuarantineResult(dest=os.path.join(quarantine_root, compact_utc(now)))
        os.makedirs(quarantine_root, mode=0o700, exist_ok=True)
        root_fd = open_path_nofollow(quarantine_root)
        try:
            set_name = _new_set(root_fd, compact_utc(now))
            result = QuarantineResult(dest=os.path.join(quarantine_root, set_name))
            dest_fd = open_dir_nofollow(set_name, dir_fd=root_fd)
            try:
                _move_all(cache_fd, dest_fd, entries, cache_dir, result)
            finally:
                os.close(dest_fd)
            result.pruned = prune(quarantine_root, keep, spare=set_name)
        finally:
            os.close(root_fd)
        return result
    finally:
        os.close(cache_fd)


def _move_all(cache_fd: int, dest_fd: int, entries: List[str], cache_dir: str, result: QuarantineResult) -> None:
    manifest = {}
    result.failed.extend(f"{name}: left in place (more than {MAX_ENTRIES} entries)" for name in entries[MAX_ENTRIES:])
    for name in entries[:MAX_ENTRIES]:
        try:
            size = os.stat(name, dir_fd=cache_fd, follow_symlinks=False).st_size
            if size > MAX_ENTRY_BYTES:
                raise OSError(errno.EFBIG, f"{size} bytes, larger than any capabilities entry: left in place")
            digest = _sha256_at(cache_fd, name)
            try:
                os.rename(name, name, src_dir_fd=cache_fd, dst_dir_fd=dest_fd)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                _copy_then_remove(cache_fd, dest_fd, name, digest)
            manifest[name] = {"sha256": digest, "size": os.stat(name, dir_fd=dest_fd, follow_symlinks=False).st_size}
            result.moved.append(name)
        except OSError as exc:
            result.failed.append(f"{name}: {exc.strerror or exc}")
    try:
        data = json.dumps({"from": cache_dir, "files": manifest}, indent=1, sort_keys=True).encode()
        fd = os.open("MANIFEST.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dest_fd)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.fsync(dest_fd)  # the renames and the manifest are durable
        os.fsync(cache_fd)
    except OSError as exc:
        result.failed.append(f"MANIFEST.json: {exc.strerror or exc}")


def prune(quarantine_root: str, keep: int, spare: str = "") -> List[str]:
    """Remove the oldest quarantine sets beyond `keep` (their names sort by time); `spare` (the set just made) stays."""
    try:
        with os.scandir(quarantine_root) as it:
            sets = sorted(e.name for e in it if e.is_dir(follow_symlinks=False) and e.name != spare)
    except FileNotFoundError:
        return []
    room = keep - (1 if spare else 0)
    old = sets[: len(sets) - room] if len(sets) > room else []
    for name in old:
        shutil.rmtree(os.path.join(quarantine_root, name))  # fd-based on Linux: links inside are not followed
    return old
