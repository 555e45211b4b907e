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

import itertools
import os
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..model import Probe
from .slow_reads import Answer, SlowReads, read_file

MAX_THREADS = 64  # per process; qemu's probe daemon has a handful
MAX_FDS = 256  # fds looked at per process: the listing stops there, however large the table
MAX_MEMBERS = 8  # processes captured per probe (a probe has three)
CAPTURE_BUDGET_S = 0.25  # wall time one probe's capture may take; past it, what is left is not read

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

    @classmethod
    def from_json(cls, data: Any) -> Capture:
        """A capture as the helper sent it (ValueError when it is not one: the helper is a process of its own)."""
        try:
            processes = tuple(
                ProcessCapture(
                    int(p["pid"]),
                    str(p["role"]),
                    tuple(
                        ThreadState(
                            int(t["tid"]),
                            str(t["state"])[:2],
                            _text(t.get("wchan")),
                            _text(t.get("syscall")),
                            int(t["syscall_fd"]) if isinstance(t.get("syscall_fd"), int) else None,
                        )
                        for t in p["threads"][:MAX_THREADS]
                    ),
                    tuple(int(fd) for fd in p["kvm_fds"][:MAX_FDS]),
                    int(p["threads_total"]),
                    _text(p.get("exe")),
                )
                for p in data["processes"][:MAX_MEMBERS]
            )
            return cls(str(data["probe_dir"]), str(data["machine"]), processes)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a capture: {exc}") from None

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
                    "threads": [
                        {
                            "tid": t.tid,
                            "state": t.state,
                            "wchan": t.wchan,
                            "syscall": t.syscall,
                            "syscall_fd": t.syscall_fd,
                        }
                        for t in p.threads
                    ],
                }
                for p in self.processes
            ],
        }


FD_SYSCALLS = {"read", "write", "ioctl", "accept", "accept4", "recvmsg"}


def live_members(probe: Probe) -> List[Tuple[int, str]]:
    """(pid, role) of what a capture reads: the probe's members but its zombies, which have no threads to read."""
    return [(m.process.pid, m.role.value) for m in probe.members if not m.process.is_zombie]


class Capturer:
    """Reads the /proc tree under `root` (a test may point it at a recorded one)."""

    def __init__(self, root: str = "/proc", machine: Optional[str] = None, slow: Optional[SlowReads] = None):
        self.root = root
        self.machine = machine or platform.machine()
        self.slow = slow or SlowReads()  # wchan and syscall wait on the process's exec lock: off the loop

    def _read(self, path: str, cap: int = 512, blocks_for: Optional[int] = None) -> Optional[str]:
        """blocks_for: the pid whose locks the read waits on (then it runs off the loop, with a deadline)."""
        if blocks_for is None:
            data: Answer = read_file(path, cap)
        else:
            data = self.slow.read(path, cap, (blocks_for, -1.0))
        return data.decode("ascii", "replace").strip() if isinstance(data, bytes) else None

    def thread(self, pid: int, tid: int) -> Optional[ThreadState]:
        base = f"{self.root}/{pid}/task/{tid}"
        stat = self._read(f"{base}/stat")
        if not stat:
            return None
        state = stat[stat.rfind(")") + 2 :].split(" ", 1)[0] if ")" in stat else "?"
        wchan = self._read(f"{base}/wchan", blocks_for=pid)
        raw = self._read(f"{base}/syscall", blocks_for=pid)
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

    def _names(self, path: str, cap: int) -> List[str]:
        """The first `cap` entries of a /proc dir, read by a listing that stops there (a 100,000-fd table costs
        `cap`)."""
        try:
            with os.scandir(path) as entries:
                return [e.name for e in itertools.islice(entries, cap)]
        except OSError:
            return []

    def kvm_fds(self, pid: int) -> Tuple[int, ...]:
        found: List[int] = []
        for name in self._names(f"{self.root}/{pid}/fd", MAX_FDS):
            try:
                target = os.readlink(f"{self.root}/{pid}/fd/{name}")
            except OSError:
                continue
            if target == "/dev/kvm" or target.startswith("anon_inode:kvm"):
                found.append(int(name))
        return tuple(sorted(found))

    def process(self, pid: int, role: str, deadline: float = float("inf")) -> ProcessCapture:
        listed = [int(t) for t in self._names(f"{self.root}/{pid}/task", MAX_THREADS * 4) if t.isdigit()]
        tids = [pid] + sorted(t for t in listed if t != pid)  # the main thread first, so the cap never drops it
        threads: List[ThreadState] = []
        for tid in tids[:MAX_THREADS]:
            if time.monotonic() >= deadline:
                break
            t = self.thread(pid, tid)
            if t is not None:
                threads.append(t)
        try:
            exe: Optional[str] = os.readlink(f"{self.root}/{pid}/exe")
        except OSError:
            exe = None
        kvm = self.kvm_fds(pid) if time.monotonic() < deadline else ()
        return ProcessCapture(pid, role, tuple(threads), kvm, len(listed), exe)

    def capture(self, probe: Probe, budget: float = CAPTURE_BUDGET_S) -> Capture:
        """The probe's live members (at most MAX_MEMBERS), each thread of each, within `budget` seconds."""
        return self.capture_pids(probe.path, live_members(probe), budget)

    def capture_pids(self, probe_dir: str, members: Sequence[Tuple[int, str]], budget: float) -> Capture:
        """The members given (pid, role), MAX_MEMBERS at most, within `budget` seconds (the capture helper's job)."""
        deadline = time.monotonic() + budget
        procs = []
        for pid, role in members[:MAX_MEMBERS]:
            if time.monotonic() >= deadline:
                break
            procs.append(self.process(pid, role, deadline))
        return Capture(probe_dir, self.machine, tuple(procs))

    @staticmethod
    def skipped(probe: Probe) -> Capture:
        """No capture: past the scan's budget of captures (the probe's diagnosis says only what its members' states
        say)."""
        return Capture(probe.path, platform.machine(), ())


def _text(value: Any) -> Optional[str]:
    return str(value)[:4096] if isinstance(value, str) else None
