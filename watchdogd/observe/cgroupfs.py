"""The processes the kernel placed in a systemd slice, read from cgroupfs: no process's own files are read to find them.

libvirt starts every guest in machine.slice (machine-qemu…scope) and daemonizes it (its parent is PID 1, not
libvirt), and no unprivileged uid can move a process there. So between full walks of /proc a new guest is
found here, in cgroup v2 (/sys/fs/cgroup/machine.slice), the hybrid layout's unified tree, or cgroup v1's
name=systemd tree (Kylin V10, openEuler 20.03). The walk is bounded: a slice holds scopes, and a scope its few
sub-cgroups (libvirt/emulator, libvirt/vcpuN).
"""

from __future__ import annotations

import os
from typing import Optional, Set

from ..budget import Budget

ROOT = "/sys/fs/cgroup"
TREES = ("systemd", "unified", "")  # v1's name=systemd, the hybrid unified, v2 itself
MAX_DIRS = 4096  # cgroups read per call (a guest has about 2 + its vCPUs)
MAX_DEPTH = 4


def slice_pids(name: str, root: str = ROOT) -> Optional[Set[int]]:
    """The pids in the slice (and below), or None where there is no such systemd tree to read."""
    for tree in TREES:
        top = os.path.join(root, tree, name) if tree else os.path.join(root, name)
        if os.path.isdir(top):
            pids: Set[int] = set()
            _collect(top, 0, pids, Budget(MAX_DIRS))
            return pids
    return None


def _collect(path: str, depth: int, pids: Set[int], dirs: Budget) -> None:
    if not dirs.take():
        return
    try:
        with open(os.path.join(path, "cgroup.procs"), "rb") as f:
            pids.update(int(x) for x in f.read(1 << 20).split() if x.isdigit())
        children = [e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False)] if depth < MAX_DEPTH else []
    except OSError:
        return  # a cgroup removed under us
    for child in children:
        _collect(child, depth + 1, pids, dirs)
