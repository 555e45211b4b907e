"""A shell command in a chroot of an image being built, with a /proc, a read-only /sys and a private /dev of its own.

Never the host's /dev: apt in the chroot installs udev and systemd, whose tmpfiles rules (`z /dev/kvm 0660 - kvm -`)
would re-own the host's own device nodes to the image's gids (seen here: the host's /dev/kvm became root:993 0660,
a gid of another group on the host). The private /dev is a tmpfs holding only the character devices a package
install uses, bound from the host one by one, a devpts of its own and a /dev/shm.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import IO, List

CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


def in_chroot(root: Path, command: str, log: IO[str]) -> None:
    """Run `command` under /bin/sh in the chroot; the mounts are undone after, whatever happens."""
    mounts: List[Path] = []

    def mount(target: Path, *argv: str) -> None:
        if not target.exists():
            target.mkdir(parents=True)
        subprocess.run(["mount", *argv, str(target)], check=True)
        mounts.append(target)

    try:
        mount(root / "proc", "-t", "proc", "proc")
        mount(root / "sys", "-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs")
        mount(root / "dev", "-t", "tmpfs", "-o", "mode=0755,nosuid,size=16m", "kvmwd-dev")
        for name in DEVICES:
            (root / "dev" / name).touch()
            mount(root / "dev" / name, "--bind", f"/dev/{name}")
        mount(root / "dev" / "pts", "-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=0620", "devpts")
        os.symlink("pts/ptmx", root / "dev" / "ptmx")
        mount(root / "dev" / "shm", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "shm")
        subprocess.run(
            ["chroot", str(root), "/bin/sh", "-c", command],
            check=True,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=CHROOT_ENV,
        )
    finally:
        for m in reversed(mounts):
            subprocess.run(["umount", "-l", str(m)], check=False)
