"""What a stuck probe is doing, read from /proc before anything acts on it.

For each member and each of its threads: the state, the kernel wait channel, the
syscall it sits in (number, name and first argument, from /proc/PID/task/TID/syscall),
and which of its fds are KVM's (/dev/kvm, anon_inode:kvm-vm, kvm-vcpu). Everything
here reads small /proc files of a process the qemu user may own: nothing blocks,
and every read is capped (threads, fds, bytes), so a hostile process with 10,000
threads or fds costs a bounded capture. Another uid's wchan and syscall need ptrace
access (the unit's CAP_SYS_PTRACE): without it they read as unknown.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..fsafe import read_capped
from ..model import Probe

MAX_THREADS = 64  # per process; qemu's probe daemon has a handful
MAX_FDS = 256

# The syscalls a stuck qemu is seen in, by number, for the two architectures that matter.
SYSCALLS: Dict[str, Dict[int, str]] = {
    "x86_64": {
        0: "read",
        1: "write",
        7: "poll",
        16: "ioctl",
        23: "select",
        34: "pause",
        35: "nanosleep",
        43: "accept",
        47: "recvmsg",
        61: "wait4",
        128: "rt_sigtimedwait",
        202: "futex",
        219: "restart_syscall",
        230: "clock_nanosleep",
        232: "epoll_wait",
        270: "pselect6",
        271: "ppoll",
        281: "epoll_pwait",
        288: "accept4",
    },
    "aarch64": {
        22: "epoll_pwait",
        29: "ioctl",
        63: "read",
        64: "write",
        72: "pselect6",
        73: "ppoll",
        98: "futex",
        101: "nanosleep",
        115: "clock_nanosleep",
        128: "restart_syscall",
        137: "rt_sigtimedwait",
        202: "accept",
        212: "recvmsg",
        242: "accept4",
        260: "wait4",
    },
}


def syscall_name(number: int, machine: str) -> str:
    """
    >>> syscall_name(202, "x86_64"), syscall_name(98, "aarch64"), syscall_name(999, "x86_64")
    ('futex', 'futex', 'syscall 999')
    """
    return SYSCALLS.get(machine, {}).get(number, f"syscall {number}")


@dataclass(frozen=True)
class ThreadState:
    tid: int
    state: str  # R, S, D, Z, T...
    wchan: Optional[str]  # None: unreadable (no ptrace access)
    syscall: Optional[str]  # a name, "running", or None when unreadable
    syscall_fd: Optional[int] = None  # the first argument, where the call takes an fd (read, ioctl, poll's are not)


@dataclass(frozen=True)
class ProcessCapture:
    pid: int
    role: str
    threads: Tuple[ThreadState, ...]
    kvm_fds: Tuple[int, ...]  # fds on /dev/kvm or a KVM anon inode
    threads_total: int  # may be more than were read (MAX_THREADS)
    exe: Optional[str] = None

    @property
    def main(self) -> Optional[ThreadState]:
        return next((t for t in self.threads if t.tid == self.pid), None)


@dataclass(frozen=True)
class Capture:
    probe_dir: str
    machine: str
    processes: Tuple[ProcessCapture, ...] = field(default_factory=tuple)

    def to_json(self) -> Dict[str, object]:
        return {
            "probe_dir": self.probe_dir,
            "machine": self.machine,
            "processes": [
                {
                    "pid": p.pid,
                    "role": p.role,
                    "exe": p.exe,
                    "threads_total": p.threads_total,
                    "kvm_fds": list(p.kvm_fds),
                    "threads": [{"tid": t.tid, "state": t.state, "wchan": t.wchan, "syscall": t.syscall, "syscall_fd": t.syscall_fd} for t in p.threads],
                }
                for p in self.processes
            ],
        }


FD_SYSCALLS = {"read", "write", "ioctl", "accept", "accept4", "recvmsg"}


class Capturer:
    """Reads the /proc tree under `root` (a test may point it at a recorded one)."""

    def __init__(self, root: str = "/proc", machine: Optional[str] = None):
        self.root = root
        self.machine = machine or platform.machine()

    def _read(self, path: str, cap: int = 512) -> Optional[str]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            return read_capped(fd, cap).decode("ascii", "replace").strip()
        except OSError:
            return None
        finally:
            os.close(fd)

    def thread(self, pid: int, tid: int) -> Optional[ThreadState]:
        base = f"{self.root}/{pid}/task/{tid}"
        stat = self._read(f"{base}/stat")
        if not stat:
            return None
        state = stat[stat.rfind(")") + 2 :].split(" ", 1)[0] if ")" in stat else "?"
        wchan = self._read(f"{base}/wchan")
        raw = self._read(f"{base}/syscall")
        syscall: Optional[str] = None
        fd: Optional[int] = None
        if raw:
            words = raw.split()
            if words[0] == "running":
                syscall = "running"
            elif words[0].lstrip("-").isdigit() and int(words[0]) >= 0:
                syscall = syscall_name(int(words[0]), self.machine)
                if syscall in FD_SYSCALLS and len(words) > 1:
                    try:
                        fd = int(words[1], 16)
                    except ValueError:
                        fd = None
        return ThreadState(tid, state, wchan if wchan and wchan != "0" else None, syscall, fd)

    def kvm_fds(self, pid: int) -> Tuple[int, ...]:
        try:
            names = os.listdir(f"{self.root}/{pid}/fd")
        except OSError:
            return ()
        found: List[int] = []
        for name in names[:MAX_FDS]:
            try:
                target = os.readlink(f"{self.root}/{pid}/fd/{name}")
            except OSError:
                continue
            if target == "/dev/kvm" or target.startswith("anon_inode:kvm"):
                found.append(int(name))
        return tuple(sorted(found))

    def process(self, pid: int, role: str) -> ProcessCapture:
        try:
            tids = sorted(int(t) for t in os.listdir(f"{self.root}/{pid}/task") if t.isdigit())
        except OSError:
            tids = []
        if pid in tids:  # the main thread first, so the cap never drops it
            tids.remove(pid)
            tids.insert(0, pid)
        threads = tuple(t for t in (self.thread(pid, tid) for tid in tids[:MAX_THREADS]) if t is not None)
        try:
            exe: Optional[str] = os.readlink(f"{self.root}/{pid}/exe")
        except OSError:
            exe = None
        return ProcessCapture(pid, role, threads, self.kvm_fds(pid), len(tids), exe)

    def capture(self, probe: Probe) -> Capture:
        """Every live member of the probe, each thread of each (zombies have none)."""
        procs = tuple(self.process(m.process.pid, m.role.value) for m in probe.members if not m.process.is_zombie)
        return Capture(probe.path, self.machine, procs)
