"""A shell command in a chroot of an image being built, with /proc, /sys and /dev bound for it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import IO

CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}


def in_chroot(root: Path, command: str, log: IO[str]) -> None:
    """Run `command` under /bin/sh in the chroot; the binds are undone after, whatever happens."""
    mounts = []
    try:
        for fs in ("proc", "sys", "dev"):
            subprocess.run(["mount", "--rbind", f"/{fs}", str(root / fs)], check=True)
            subprocess.run(["mount", "--make-rslave", str(root / fs)], check=True)
            mounts.append(root / fs)
        subprocess.run(
            ["chroot", str(root), "/bin/sh", "-c", command],
            check=True,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=CHROOT_ENV,
        )
    finally:
        for m in reversed(mounts):
            subprocess.run(["umount", "-R", "-l", str(m)], check=False)
