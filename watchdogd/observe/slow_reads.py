"""Reads of another process's /proc files that can block, done off the loop with a deadline.

A read of /proc/PID/cmdline or environ waits for the process's memory-map lock, and wchan,
stack and syscall for its exec lock: a hung hypervisor process (a fault on a stalled FUSE or
NFS page while another thread waits to map, field reports from nhc, moby, garden-runc) makes
that read wait as long as it hangs. A watchdog must never wait on what it watches: each such
read runs on one of WORKERS daemon threads and the caller waits DEADLINE_S at most. A read
that did not return marks its process (pid, start time) stuck: it is skipped, and told once,
until that read returns at last (the process ended, or let its lock go: a slow process on a
loaded host costs one scan's view of it, never more). While every worker is stuck, no such
read is tried.
"""

from __future__ import annotations

import enum
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import AbstractSet, Dict, List, Optional, Tuple, Union

from ..fsafe import READ_NOFOLLOW, read_capped

DEADLINE_S = 0.25
WORKERS = 4
MAX_STUCK = 1024  # processes remembered as stuck; past it the oldest are forgotten (and may cost a deadline again)
Owner = Tuple[int, float]  # (pid, start time in seconds since boot): one process's whole life


class Unanswered(enum.Enum):
    """A read not made or not answered in time: the process is there, what it holds is not known."""

    UNANSWERED = "unanswered"


UNANSWERED = Unanswered.UNANSWERED
Answer = Union[bytes, None, Unanswered]


@dataclass
class _Read:
    path: str
    cap: int
    owner: Owner
    done: threading.Event = field(default_factory=threading.Event)
    data: Optional[bytes] = None
    late: bool = False  # its caller stopped waiting: the owner is stuck until this returns


def read_file(path: str, cap: int) -> Optional[bytes]:
    """The file's first cap bytes; None when it cannot be opened or read (gone, not ours). Opened as every file
    someone else could have put in place is (fsafe.READ_NOFOLLOW)."""
    try:
        fd = os.open(path, READ_NOFOLLOW)
    except OSError:
        return None
    try:
        return read_capped(fd, cap)
    except OSError:
        return None  # ESRCH: it exited between open and read
    finally:
        os.close(fd)


class SlowReads:
    """The workers, the deadline, and the processes whose reads never came back."""

    def __init__(self, workers: int = WORKERS, deadline: float = DEADLINE_S):
        self.workers = workers
        self.deadline = deadline
        self.stuck: Dict[Owner, str] = {}  # the process -> the file that did not answer
        self._jobs: queue.Queue[_Read] = queue.Queue()
        self._threads: List[threading.Thread] = []
        self._busy = 0
        self._lock = threading.Lock()

    def read(self, path: str, cap: int, owner: Owner) -> Answer:
        """What read_file gives; UNANSWERED at once for a stuck process (or with every worker stuck), or after the
        deadline (the process is then stuck)."""
        if owner in self.stuck:
            return UNANSWERED
        with self._lock:
            if self._busy >= self.workers:
                return UNANSWERED  # every worker waits on a hung process: try nothing until one is back
            self._busy += 1
            if len(self._threads) < self._busy:
                worker = threading.Thread(target=self._work, name="kvmwd-slow-read", daemon=True)
                worker.start()  # daemon: a worker stuck for good never holds up the exit
                self._threads.append(worker)
        job = _Read(path, cap, owner)
        self._jobs.put(job)
        job.done.wait(self.deadline)
        with self._lock:
            if job.done.is_set():
                return job.data
            job.late = True
            if len(self.stuck) >= MAX_STUCK:
                del self.stuck[next(iter(self.stuck))]
            self.stuck[owner] = path
        return UNANSWERED

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job.data = read_file(job.path, job.cap)
            finally:
                with self._lock:
                    self._busy -= 1
                    job.done.set()
                    if job.late:
                        self.stuck.pop(job.owner, None)  # it answered at last: slow, not hung; read again next time

    @property
    def all_stuck(self) -> bool:
        return self._busy >= self.workers

    def keep_only(self, alive: AbstractSet[int]) -> None:
        """Forget the stuck processes that are gone (their pid may be anyone's next)."""
        self.stuck = {o: p for o, p in self.stuck.items() if o[0] in alive}
