"""The processes the kernel placed in a systemd cgroup, from cgroupfs: no process's own files are read to find them.

libvirt starts every guest in machine.slice (machine-qemu…scope) and daemonizes it (its parent is PID 1, not
libvirt), and every probe in its own unit's cgroup (libvirtd.service, virtqemud.service: its units use
KillMode=process, so a probe's daemon stays there however it re-parents). No unprivileged uid can move a process
into either. So on a systemd host a guest, and a probe's every live member, is found here, in cgroup v2
(/sys/fs/cgroup/...), the hybrid layout's unified tree, or cgroup v1's name=systemd tree (Kylin V10, openEuler
20.03), whatever else the host runs. A zombie is in no cgroup.procs: a probe's intermediate is found as its first
process's child. The walk is bounded: a slice holds scopes, a scope or a unit its few sub-cgroups.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Set

from ..budget import Budget

ROOT = "/sys/fs/cgroup"
TREES = ("systemd", "unified", "")  # v1's name=systemd, the hybrid unified, v2 itself
MAX_DIRS = 4096  # cgroups read per call (a guest has about 2 + its vCPUs)
MAX_DEPTH = 4
MAX_BYTES = 1 << 20  # of one cgroup.procs: 140k pids


def cgroup_pids(components: Sequence[str], root: str = ROOT) -> Optional[Set[int]]:
    """The pids in the cgroup (and below), or None where no systemd tree here has it."""
    if not components or any(c in ("", ".", "..") or "/" in c for c in components):
        return None
    for tree in TREES:
        top = os.path.join(root, tree, *components) if tree else os.path.join(root, *components)
        if os.path.isdir(top):
            pids: Set[int] = set()
            _collect(top, 0, pids, Budget(MAX_DIRS))
            return pids
    return None


def slice_pids(name: str, root: str = ROOT) -> Optional[Set[int]]:
    """The pids in a top-level slice (and below), or None where there is no such systemd tree to read."""
    return cgroup_pids((name,), root)


def _collect(path: str, depth: int, pids: Set[int], dirs: Budget) -> None:
    if not dirs.take():
        return
    try:
        with open(os.path.join(path, "cgroup.procs"), "rb") as f:
            pids.update(int(x) for x in f.read(MAX_BYTES).split() if x.isdigit())
        children = [e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False)] if depth < MAX_DEPTH else []
    except OSError:
        return  # a cgroup removed under us
    for child in children:
        _collect(child, depth + 1, pids, dirs)
