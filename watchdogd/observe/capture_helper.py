"""The capture, apart from the daemon: a socket-activated helper reads a hung probe's threads.

Reading another uid's /proc/PID/syscall, wchan and fds needs ptrace's read access, and a
daemon holding CAP_SYS_PTRACE reaches every process's memory and root (/proc/PID/root): write
a root daemon's memory, or a read-only path through its root. So the daemon keeps no such
capability; this helper (kvm-watchdog-capture@.service, one per connection, `kvm-watchdog
capture-helper`) runs as a dynamic uid that owns nothing, with CAP_SYS_PTRACE and
CAP_DAC_READ_SEARCH only: it reads, and can write nothing of anyone's. One request a
connection: a JSON line {"probe_dir", "members": [[pid, role], ...]} of at most
REQUEST_BYTES; the answer, the capture as JSON. Where the socket is not there (no systemd, a
session libvirt's tests) the daemon captures itself with what it may read, and says so once.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import BinaryIO, Deque, List, Optional, Sequence, Tuple

from .. import helper_socket
from ..problems import Problems
from .capture import CAPTURE_BUDGET_S, MAX_MEMBERS, Capture, Capturer
from .slow_reads import SlowReads

SOCKET = "/run/kvm-watchdog-capture.sock"
REQUEST_BYTES = 65536
ANSWER_BYTES = 1024 * 1024
# connect, ask, and read the answer, the helper's own start included: ~0.3 s on hardware, seconds on an emulated
# host (TCG). Once it fails, the daemon reads for itself for AGAIN_AFTER_S: one helper that hangs costs one deadline
# a minute, never one per probe (the capture runs on the loop, and 4 probes a scan may be captured).
DEADLINE_S = 10.0
AGAIN_AFTER_S = 60.0


@dataclass(frozen=True)
class HelperShare:
    """What the helpers may take of the loop, which owes systemd a WATCHDOG=1 every WatchdogSec (30 s) and may
    capture 4 probes a scan: `seconds` of any `window`, each ask given what is left, none with less than `least`."""

    seconds: float = 15.0
    window: float = 30.0
    least: float = 2.0


def request_of(probe_dir: str, members: Sequence[Tuple[int, str]]) -> str:
    """The helper's request line (without its newline): the probe dir, and its members (pid, role)."""
    return json.dumps({"probe_dir": probe_dir, "members": [list(m) for m in members[:MAX_MEMBERS]]})


def serve(inp: BinaryIO, out: BinaryIO, capturer: Capturer) -> int:
    """Answer one request; 0, or 2 for a request that is not one (nothing is read then)."""
    try:
        request = json.loads(inp.readline(REQUEST_BYTES).decode("utf-8"))
        probe_dir = str(request["probe_dir"])
        members: List[Tuple[int, str]] = [
            (int(pid), str(role)[:32]) for pid, role in request["members"][:MAX_MEMBERS] if int(pid) > 0
        ]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        out.write(b'{"error": "not a capture request"}\n')
        return 2
    capture = capturer.capture_pids(probe_dir, members, CAPTURE_BUDGET_S)
    out.write(json.dumps(capture.to_json(), sort_keys=True).encode() + b"\n")
    out.flush()
    return 0


def serve_stdio() -> int:
    """The helper's one answer on its socket (systemd's StandardInput/StandardOutput=socket), reading /proc."""
    return serve(sys.stdin.buffer, sys.stdout.buffer, Capturer())


class HelpedCapturer(Capturer):
    """The daemon's capturer: asks the helper where its socket is, else reads what the daemon itself may."""

    def __init__(
        self,
        root: str = "/proc",
        slow: Optional[SlowReads] = None,
        socket_path: str = SOCKET,
        problems: Optional[Problems] = None,
        share: HelperShare = HelperShare(),
    ):
        super().__init__(root, slow=slow)
        self.socket_path = socket_path
        self.problems = problems
        self.share = share
        self._helper_again_at = 0.0  # monotonic: after a failure, when the helper is asked again
        self.asked: Deque[Tuple[float, float]] = collections.deque()  # (when, how long) each ask took, in the window

    def capture_pids(self, probe_dir: str, members: Sequence[Tuple[int, str]], budget: float) -> Capture:
        now = time.monotonic()
        left = self._share_left(now)
        if now >= self._helper_again_at and os.path.exists(self.socket_path):
            if left < self.share.least:
                spent = f"{self.share.seconds:g}s of any {self.share.window:g}s"
                self._tell(f"the capture helpers had their share of the loop ({spent}): captured by the daemon")
                return super().capture_pids(probe_dir, members, budget)
            try:
                return self._ask(probe_dir, members, min(DEADLINE_S, left))
            except (OSError, ValueError) as exc:
                self._helper_again_at = time.monotonic() + AGAIN_AFTER_S
                self._tell(f"the capture helper at {self.socket_path} did not answer ({exc}): captured by the daemon")
            finally:
                self.asked.append((now, time.monotonic() - now))
        return super().capture_pids(probe_dir, members, budget)

    def _share_left(self, now: float) -> float:
        while self.asked and self.asked[0][0] < now - self.share.window:
            self.asked.popleft()
        return self.share.seconds - sum(took for _, took in self.asked)

    def _ask(self, probe_dir: str, members: Sequence[Tuple[int, str]], limit_s: float) -> Capture:
        answered = helper_socket.ask(self.socket_path, request_of(probe_dir, members).encode(), limit_s, ANSWER_BYTES)
        answer = json.loads(answered.decode("utf-8"))
        if isinstance(answer, dict) and "error" in answer:
            raise ValueError(str(answer["error"]))
        return Capture.from_json(answer)

    def _tell(self, text: str) -> None:
        if self.problems is not None:
            self.problems.add(text, "capture-helper")
