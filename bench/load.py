"""Extra processes for the scan benchmarks: N sleepers, 1% of them named like an emulator.

Spawned with posix_spawn into one process group of their own, ended by that group
and reaped here: nothing outlives the benchmark.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from typing import List, Optional

SLEEP = shutil.which("sleep") or "/bin/sleep"


class ProcessLoad:
    def __init__(self, count: int, emulator_share: float = 0.01):
        self.count = count
        self.emulator_share = emulator_share
        self.pids: List[int] = []
        self.pgid: Optional[int] = None
        self._dir: Optional[str] = None

    def __enter__(self) -> ProcessLoad:
        self._dir = tempfile.mkdtemp(prefix="kvmwd-bench-load-")
        fake = os.path.join(self._dir, "qemu-system-x86_64")  # the watchdog reads this one's cmdline
        shutil.copy(SLEEP, fake)
        every = int(1 / self.emulator_share) if self.emulator_share else 0
        for i in range(self.count):
            program = fake if every and i % every == 0 else SLEEP
            pid = os.posix_spawn(program, [program, "infinity"], {"PATH": "/usr/bin:/bin"}, setpgroup=self.pgid or 0)
            if self.pgid is None:
                self.pgid = pid
            self.pids.append(pid)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pgid is not None:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in self.pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.pids = []
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
