"""The capture apart from the daemon: it asks the helper over a socket, as systemd's Accept=yes runs it.

The helper here is the installed console script given the accepted connection as its stdin and
stdout, exactly as kvm-watchdog-capture@.service is; the process read is the nobody user's, as
the qemu user's probes are. A helper that does not answer costs the daemon its deadline once, and
the daemon reads for itself and says so.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from harness.actors import as_nobody
from harness.service import command

from watchdogd.observe.capture_helper import HelpedCapturer, HelperShare
from watchdogd.problems import Problems


@contextlib.contextmanager
def accepting(path: Path, handle: Callable[[socket.socket], None]) -> Iterator[Path]:
    """A listening socket at path whose every connection `handle` is given, in turn, as systemd's Accept=yes does."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                handle(conn)

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield path
    finally:
        server.close()


@pytest.fixture
def helper_socket(tmp_path: Path) -> Iterator[Path]:
    """A socket whose every connection runs `kvm-watchdog capture-helper` on it."""

    def run_helper(conn: socket.socket) -> None:
        subprocess.run([command(), "capture-helper"], stdin=conn.fileno(), stdout=conn.fileno(), timeout=30)

    with accepting(tmp_path / "capture.sock", run_helper) as path:
        yield path


def test_the_daemon_reads_another_users_process_through_the_helper(helper_socket: Path) -> None:
    sleeper = subprocess.Popen(as_nobody(["sleep", "600"]))
    try:
        problems = Problems()
        capture = HelpedCapturer(socket_path=str(helper_socket), problems=problems).capture_pids(
            "/var/lib/libvirt/qemu/qmp-AAAAAA", [(sleeper.pid, "daemon")], 0.25
        )
        [process] = capture.processes
        assert process.pid == sleeper.pid and process.main is not None
        assert process.main.syscall in ("clock_nanosleep", "nanosleep", "restart_syscall"), process.main
        assert capture.probe_dir == "/var/lib/libvirt/qemu/qmp-AAAAAA" and problems.drain() == ()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_helper_that_never_answers_costs_its_deadline_and_the_daemon_reads_for_itself(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(path))
    silent.listen(4)  # accepts (the kernel queues it) and never answers
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        problems = Problems()
        capturer = HelpedCapturer(socket_path=str(path), problems=problems)
        capture = capturer.capture_pids("/x", [(sleeper.pid, "daemon")], 0.25)
        assert [p.pid for p in capture.processes] == [sleeper.pid], "read by the daemon itself"
        [told] = problems.drain()
        assert "did not answer" in told.text and "captured by the daemon" in told.text
        again = capturer.capture_pids("/x", [(sleeper.pid, "daemon")], 0.25)  # the next probe, within the minute
        assert [p.pid for p in again.processes] == [sleeper.pid]
        silent.setblocking(False)
        waiting = []
        while True:
            try:
                waiting.append(silent.accept()[0])
            except BlockingIOError:
                break
        assert len(waiting) == 1, "the helper that failed was asked once, not once a probe"
    finally:
        silent.close()
        sleeper.kill()
        sleeper.wait()


def test_helpers_that_answer_slowly_never_take_more_than_their_share_of_the_loop(tmp_path: Path) -> None:
    """The loop owes systemd its WATCHDOG=1 and may capture 4 probes a scan: slow helpers get a share of its time,
    and past it the daemon reads for itself and says so."""

    def answer_slowly(conn: socket.socket) -> None:  # a helper that starts slowly, then answers with nothing captured
        request = json.loads(conn.makefile("rb").readline())
        time.sleep(0.3)  # the fault: a helper slow to start
        answer = {"probe_dir": request["probe_dir"], "machine": "x86_64", "processes": []}
        conn.sendall(json.dumps(answer).encode() + b"\n")

    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        with accepting(tmp_path / "slow.sock", answer_slowly) as path:
            problems = Problems()
            share = HelperShare(seconds=2.0, window=600.0, least=1.0)
            capturer = HelpedCapturer(socket_path=str(path), problems=problems, share=share)
            captures = [capturer.capture_pids(f"/x/qmp-{n}", [(sleeper.pid, "daemon")], 0.25) for n in range(8)]
            # the helper here captures nothing; the daemon itself finds the pid
            by_helper = [not c.processes for c in captures]
            assert by_helper[0] and not by_helper[-1], by_helper
            assert by_helper == sorted(by_helper, reverse=True), "the helper until its share was spent, then the daemon"
            assert sum(took for _, took in capturer.asked) <= share.seconds + 0.1, capturer.asked
            assert any("had their share of the loop" in p.text for p in problems.drain())
    finally:
        sleeper.kill()
        sleeper.wait()
