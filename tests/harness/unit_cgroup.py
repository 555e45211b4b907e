"""A libvirt daemon's own systemd unit cgroup, made by hand on a host whose systemd is not PID 1.

The kernel keeps a process, and every child it forks, in the cgroup it was put in; systemd does no more for a
unit's processes than this does: a dir named like the unit in the systemd tree (cgroup v1's name=systemd here, as
on Kylin V10; the unified tree or v2 itself elsewhere), the daemon's pids written to its cgroup.procs. On leaving,
what is left is moved back to the tree's root and the dirs are removed.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterable, List, Optional

from .wait import wait_for

ROOT = Path("/sys/fs/cgroup")


def systemd_tree() -> Optional[Path]:
    """The tree systemd tracks units in (and the scan reads), or None where this host has none to write."""
    for tree in (ROOT / "systemd", ROOT / "unified", ROOT):
        if (tree / "cgroup.procs").exists() and os.access(tree, os.W_OK):
            return tree
    return None


class UnitCgroup:
    def __init__(self, unit: str = "libvirtd.service"):
        tree = systemd_tree()
        if tree is None:
            raise RuntimeError("no writable systemd cgroup tree on this host")
        self.tree = tree
        self.slice = tree / f"kvmwd-test-{uuid.uuid4().hex[:8]}.slice"
        self.path = self.slice / unit

    @property
    def components(self) -> List[str]:
        return [self.slice.name, self.path.name]

    def __enter__(self) -> UnitCgroup:
        self.path.mkdir(parents=True)
        return self

    def place(self, pids: Iterable[int]) -> None:
        for pid in pids:
            (self.path / "cgroup.procs").write_text(str(pid))

    def pids(self) -> List[int]:
        return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]

    def __exit__(self, *exc: object) -> None:
        def emptied() -> bool:
            for pid in self.pids():
                try:
                    (self.tree / "cgroup.procs").write_text(str(pid))
                except OSError:
                    pass  # gone meanwhile
            try:
                self.path.rmdir()
                self.slice.rmdir()
            except OSError:
                return False
            return True

        wait_for(emptied, 10, f"{self.path} to be emptied and removed")
