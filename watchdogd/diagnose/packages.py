"""Which package (and version) an emulator came from, for an incident bundle: asked of dpkg or rpm (~150 ms),
once per binary (a new ctime: an upgrade), a few per scan, and only for a root-owned binary in a system dir:
never for one the qemu user placed."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Dict, List, Optional, Tuple

from .. import children
from ..budget import Budget

LOOKUPS_PER_SCAN = 2  # emulators whose package is asked of dpkg/rpm per scan (~150 ms each)
SYSTEM_DIRS = ("/usr/", "/opt/", "/bin/", "/sbin/", "/lib/")
MAX_KNOWN = 64


def worth_asking(exe: str, st: os.stat_result) -> bool:
    """Is dpkg/rpm asked which package owns this emulator? Only a root-owned binary nobody else can write, in a system
    dir.

    >>> import os
    >>> trusted_binary = worth_asking("/usr/bin/python3", os.stat("/usr/bin/python3"))
    >>> trusted_binary, worth_asking("/tmp/qemu-system-x86_64", os.stat("/"))
    (True, False)
    """
    return st.st_uid == 0 and not st.st_mode & 0o022 and exe.startswith(SYSTEM_DIRS)


class EmulatorPackages:
    def __init__(self) -> None:
        self.known: Dict[Tuple[str, float], Optional[str]] = {}  # (binary, its ctime) -> its package

    def of(self, exe: str, lookups: Budget) -> Optional[str]:
        """The emulator's package and version, asked of dpkg/rpm (~150 ms) once per binary (a new ctime: an upgrade),
        a few per scan, and only for a root-owned binary in a system dir: never for one the qemu user placed."""
        try:
            st = os.stat(exe)
        except OSError:
            return None
        if not worth_asking(exe, st):
            return None
        key = (exe, st.st_ctime)
        if key not in self.known:
            if not lookups.take():
                return None
            if len(self.known) > MAX_KNOWN:
                self.known.clear()
            self.known[key] = package_of(exe)
        return self.known[key]


def package_of(path: Optional[str], timeout: float = 2.0) -> Optional[str]:
    """The package (and its version) that owns a file, where dpkg or rpm knows it."""
    if not path:
        return None
    try:
        if shutil.which("dpkg-query"):
            owner, said = _ask(["dpkg-query", "-S", path], timeout)
            if owner and ":" in said:
                name = said.split(":", 1)[0].split(",")[0].strip()
                known, version = _ask(["dpkg-query", "-W", "-f=${Version}", name], timeout)
                return f"{name} {version.strip()}" if known else name
        if shutil.which("rpm"):
            known, said = _ask(["rpm", "-qf", path], timeout)
            if known:
                return said.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return None


def _ask(argv: List[str], timeout: float) -> Tuple[bool, str]:
    """Whether the package manager answered yes, and what it printed (children.py: its group ended at timeout)."""
    done = children.run_with_timeout(argv, timeout, stderr=subprocess.DEVNULL)
    return done.returncode == 0, (done.stdout or b"").decode("utf-8", "replace")
