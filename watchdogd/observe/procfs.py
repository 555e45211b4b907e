"""Reading /proc cheaply and without tripping over processes that vanish mid-read.

One pass reads /proc/PID/stat for every process (one small read each); the command
line, the costly part, is read only for processes whose name could be an emulator
or a libvirt daemon, only its first CMDLINE_CAP bytes, and only the arguments that
name a probe dir are kept: whatever argv the qemu user gives its processes, a scan
costs a few KiB per process at most. Start times are kept in seconds since boot, so
ages never depend on the wall clock.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Dict, List, Optional, Tuple

from ..emulators import PF_KTHREAD, cgroup_path
from ..model import Process
from .slow_reads import UNANSWERED, SlowReads, read_file

# libvirt's probe command line is ~300 bytes (~500 for a session libvirt's paths);
# the probe dir is named within the first few arguments. A guest's QEMU has a far
# longer command line, but it names no probe dir: its head is enough to tell.
CMDLINE_CAP = 4096

ArgFilter = Callable[[str], bool]


def _keep_all(arg: str) -> bool:
    return True


def parse_stat(data: bytes) -> Tuple[str, str, int, int, int]:
    """comm, state, ppid, start time (clock ticks since boot) and flags from /proc/PID/stat.

    The comm can hold spaces and parentheses, so it ends at the *last* ')'.

    >>> parse_stat(b"42 (qemu-system-x86) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 8812 0 0")
    ('qemu-system-x86', 'S', 1, 8812, 4194560)
    >>> parse_stat(b"7 (a) b) (c) Z 3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1 0 99 0")
    ('a) b) (c', 'Z', 3, 99, 0)
    >>> parse_stat(b"garbage")
    Traceback (most recent call last):
    ...
    ValueError: not a /proc/PID/stat line
    """
    open_at = data.find(b"(")
    close_at = data.rfind(b")")
    if open_at < 0 or close_at < open_at:
        raise ValueError("not a /proc/PID/stat line")
    comm = data[open_at + 1 : close_at].decode("utf-8", "replace")
    rest = data[close_at + 1 :].split()
    if len(rest) < 20:
        raise ValueError("not a /proc/PID/stat line")
    try:
        return comm, rest[0].decode("ascii"), int(rest[1]), int(rest[19]), int(rest[6])
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not a /proc/PID/stat line") from None


def split_cmdline(data: bytes) -> Tuple[str, ...]:
    """argv from /proc/PID/cmdline; bytes that are not UTF-8 survive as surrogates.

    >>> split_cmdline(b"qemu\\x00-pidfile\\x00/d/qmp-A/qmp.pid\\x00")
    ('qemu', '-pidfile', '/d/qmp-A/qmp.pid')
    >>> split_cmdline(b"")
    ()
    """
    if not data:
        return ()
    if data.endswith(b"\0"):
        data = data[:-1]
    return tuple(os.fsdecode(part) for part in data.split(b"\0"))


class ProcFS:
    """The process table under one /proc root (a test can point it at a fake tree)."""

    def __init__(
        self,
        root: str = "/proc",
        keep_arg: ArgFilter = _keep_all,
        systemd: Optional[bool] = None,
        slow: Optional[SlowReads] = None,
    ):
        """keep_arg: which command-line arguments to keep (the scan keeps only those naming a probe dir or a guest).

        systemd: whether systemd runs here, so that a process's cgroup names its unit
        or its machine scope (None: /run/systemd/system tells, as sd_booted() does)."""
        self.root = root
        self.keep_arg = keep_arg
        self.systemd = os.path.isdir("/run/systemd/system") if systemd is None else systemd
        self.slow = slow or SlowReads()  # cmdline, wchan, stack: reads a hung process can block, off the loop
        self._ticks = float(os.sysconf("SC_CLK_TCK"))
        self._own_pid_ns: Optional[str] = None  # the watchdog's own PID namespace, read once (it never changes)

    def uptime(self) -> float:
        """Seconds since boot, on the same clock as process start times."""
        if self.root == "/proc":
            return time.clock_gettime(time.CLOCK_BOOTTIME)
        with open(os.path.join(self.root, "uptime"), "rb") as f:
            return float(f.read().split()[0])

    def boot_wall(self) -> float:
        """The wall time the machine booted, for turning start times into dates."""
        return time.time() - self.uptime()

    def _read(self, path: str, cap: int) -> Optional[bytes]:
        """A file the kernel answers without waiting on the process (stat, status, cgroup); None when gone."""
        return read_file(path, cap)

    def process(self, pid: int, argv: bool = True) -> Optional[Process]:
        """One process, or None when it is not there (or vanished while being read).

        argv=False: its command line is not read (a process the kernel placed needs none)."""
        data = self._read(f"{self.root}/{pid}/stat", 4096)
        if not data:
            return None
        try:
            stat = parse_stat(data)
        except ValueError:
            return None
        return self._complete(pid, *stat, argv=argv)

    def _complete(
        self, pid: int, comm: str, state: str, ppid: int, start: int, flags: int = 0, argv: bool = True
    ) -> Optional[Process]:
        """A Process from its parsed stat, with command line (none for a zombie or a kernel thread) and owner."""
        base = f"{self.root}/{pid}"
        cmdline: Tuple[str, ...] = ()
        kthread = bool(flags & PF_KTHREAD)
        unread = False
        if state != "Z" and not kthread and argv:
            owner = (pid, start / self._ticks)
            raw = self.slow.read(base + "/cmdline", CMDLINE_CAP, owner)
            unread = raw is UNANSWERED  # there, but what it names is not known: never a probe's member (slow_reads)
            if unread:
                raw = b""
            if not isinstance(raw, bytes):
                return None
            keep = self.keep_arg
            cmdline = tuple(arg for arg in split_cmdline(raw) if keep(arg))
        try:
            uid = os.stat(base).st_uid
        except OSError:
            return None
        return Process(
            pid=pid,
            ppid=ppid,
            state=state,
            comm=comm,
            start_boot_s=start / self._ticks,
            uid=uid,
            cmdline=cmdline,
            kthread=kthread,
            cmdline_unread=unread,
        )

    def scan(self, interesting: Callable[[str], bool]) -> Dict[int, Process]:
        """Every process whose comm is interesting, with its command line; never a kernel thread.

        Only the stat file is read for every process; the rest only for interesting
        ones. Processes that exit while being read are simply not in the result.
        """
        table: Dict[int, Process] = {}
        root = self.root
        read = self._read
        for name in os.listdir(root):
            if not name.isdigit():
                continue
            data = read(f"{root}/{name}/stat", 4096)
            if not data:
                continue
            try:
                comm, state, ppid, start, flags = parse_stat(data)
            except ValueError:
                continue
            if not flags & PF_KTHREAD and interesting(comm):
                proc = self._complete(int(name), comm, state, ppid, start, flags)
                if proc is not None:
                    table[proc.pid] = proc
        self.slow.keep_only(table.keys())
        return table

    def children(self, pid: int) -> Tuple[int, ...]:
        """The children of every thread of pid (libvirtd forks from its worker threads)."""
        found: List[int] = []
        try:
            tasks = os.listdir(f"{self.root}/{pid}/task")
        except OSError:
            return ()
        for tid in tasks:
            data = self._read(f"{self.root}/{pid}/task/{tid}/children", 1 << 20)
            if data:
                found.extend(int(x) for x in data.split())
        return tuple(found)

    def descendants(
        self, roots: Tuple[int, ...], interesting: Callable[[str], bool], depth: int = 3
    ) -> Dict[int, Process]:
        """The roots and their interesting descendants, `depth` generations down.

        What the probe processes look like from libvirt: its child (the first process),
        that one's child (the intermediate, a zombie when hung). A few reads, however
        many processes the host runs; the daemon proper re-parents away and is found
        through its pidfile or a full scan.
        """
        table: Dict[int, Process] = {}
        level = list(roots)
        for _ in range(depth):
            following: List[int] = []
            for pid in level:
                proc = self.process(pid)
                if proc is None or (pid not in roots and (proc.kthread or not interesting(proc.comm))):
                    continue
                table[pid] = proc
                if not proc.is_zombie:
                    following.extend(self.children(pid))
            level = following
        return table

    def tracer(self, pid: int) -> Optional[int]:
        """TracerPid from /proc/PID/status (0: not traced); None when it is gone or unreadable."""
        data = self._read(f"{self.root}/{pid}/status", 4096)
        for line in (data or b"").splitlines():
            if line.startswith(b"TracerPid:"):
                try:
                    return int(line.split()[1])
                except (IndexError, ValueError):
                    return None
        return None

    def shares_pid_ns(self, pid: int) -> bool:
        """Whether pid runs in the watchdog's own PID namespace: a container's libvirtd, seen from the host, does not
        (it is that container's libvirt, not this host's). True where it cannot be told (a recorded tree)."""
        try:
            if self._own_pid_ns is None:
                self._own_pid_ns = os.readlink(f"{self.root}/self/ns/pid")
            return os.readlink(f"{self.root}/{pid}/ns/pid") == self._own_pid_ns
        except OSError:
            return True

    def cgroup(self, pid: int) -> Optional[Tuple[str, ...]]:
        """The components of pid's systemd cgroup (emulators.cgroup_path); None when it is gone or unreadable."""
        data = self._read(f"{self.root}/{pid}/cgroup", 4096)
        return None if data is None else cgroup_path(data.decode("utf-8", "replace"))

    def kernel_stack(self, pid: int) -> Dict[str, str]:
        """wchan (and the kernel stack where readable) of a process stuck in the kernel, for the report.

        Another uid's wchan needs ptrace access (CAP_SYS_PTRACE): without it the
        kernel answers "0", which is no place at all, and is reported as unreadable.
        """
        out: Dict[str, str] = {}
        for name in ("wchan", "stack"):
            data = self.slow.read(f"{self.root}/{pid}/{name}", 16384, (pid, -1.0))
            text = data.decode("utf-8", "replace").strip() if isinstance(data, bytes) else ""
            if text and text != "0":
                out[name] = text
        if "wchan" not in out:
            out["wchan"] = "unreadable (reading another user's wchan needs CAP_SYS_PTRACE)"
        return out
