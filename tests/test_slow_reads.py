"""A hung hypervisor process never hangs its watchdog.

For real: a root process named like QEMU whose /proc/PID/cmdline read waits in the kernel (a
thread of it faults on a FUSE page the test's own FUSE server holds, another maps the file
again and so holds its memory-map lock; tests/harness/fuse_hold.py). Every scan would read
that command line; the daemon reads it off the loop, waits 0.25 s once, says so once, skips
that process from then on, keeps pinging systemd's watchdog, and still finds and ends the
real libvirt's genuine hung probe. And a dir that such a process may belong to is never
removed as stale under it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest
from harness.cli import run_cli
from harness.fixtures import StartDaemon, WriteConfig
from harness.fuse_hold import HeldFile, hung_process
from harness.journald import Journald
from harness.sandbox import LibvirtSandbox, probe_shaped_dir
from harness.service import NotifyListener
from harness.wait import wait_for

WATCHDOG_S = 4.0  # WATCHDOG_USEC: the daemon pings every 2 s


@pytest.fixture
def held(tmp_path: Path) -> Iterator[HeldFile]:
    fuse = HeldFile(tmp_path / "fuse").mount()
    try:
        yield fuse
    finally:
        fuse.close()  # every READ answered first: nothing is left waiting in the kernel


def test_a_process_whose_cmdline_read_hangs_in_the_kernel_never_stalls_the_loop_nor_hides_a_genuine_hang(
    journald: Journald,
    libvirt: LibvirtSandbox,
    state_dir: Path,
    write_config: WriteConfig,
    start_daemon: StartDaemon,
    notify_socket: NotifyListener,
    held: HeldFile,
) -> None:
    victim = hung_process(held)
    try:
        cfg = write_config(libvirt.daemon_config(state_dir))
        env = {"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": str(int(WATCHDOG_S * 1e6))}
        daemon = start_daemon(cfg, env=env)
        wait_for(lambda: notify_socket.with_key("READY"), 30, "READY=1")
        started = time.monotonic()
        stuck = f"/proc/{victim.pid}/cmdline did not answer"
        wait_for(
            lambda: [e for e in daemon.journal_events("scan_problem") if stuck in e["MESSAGE"]],
            30,
            "the stuck read told",
        )
        assert held.reads >= 1 and held.held, "the kernel really asked FUSE for the page, and is still waiting"

        waiting = libvirt.hang("hang-init", count=1)
        [kill] = daemon.wait_journal("action", timeout=60, KVMWD_ACTION="kill_probe")
        assert kill["KVMWD_RESULT"] == "ok", kill["MESSAGE"]
        waiting.wait(60)
        wait_for(lambda: time.monotonic() - started >= 3 * WATCHDOG_S, 30, "a few ping periods", poll=0.5)

        pings = [t for t, _ in notify_socket.with_key("WATCHDOG", since=started - WATCHDOG_S)]
        gaps = [b - a for a, b in zip(pings, pings[1:])] + [time.monotonic() - pings[-1]]
        print(f"longest gap between WATCHDOG=1 pings beside the hung process: {max(gaps):.2f} s")
        assert max(gaps) <= WATCHDOG_S * 0.75, f"the loop went {max(gaps):.1f} s without a ping"
        told = [e for e in daemon.journal_events("scan_problem") if stuck in e["MESSAGE"]]
        assert len(told) == 1, "said once, however many scans skipped it"
        assert held.held, "still hung: the watchdog went on beside it"
        assert daemon.alive()
    finally:
        held.release()  # the hung mmap() returns once its page does: only then can the process be ended
        victim.kill()
        victim.wait(30)


def cmdline_blocks(pid: int) -> bool:
    """Whether a read of pid's command line waits in the kernel now (the waiting thread returns once released)."""
    answered = threading.Event()

    def read() -> None:
        with contextlib.suppress(OSError):  # ended by the time it returns
            Path(f"/proc/{pid}/cmdline").read_bytes()
        answered.set()

    threading.Thread(target=read, daemon=True).start()
    return not answered.wait(0.5)


def test_a_dir_whose_process_cannot_be_read_is_never_removed_as_stale(
    state_dir: Path, write_config: WriteConfig, tmp_path: Path, held: HeldFile
) -> None:
    """A probe whose memory-map lock is held answers no command line: nothing proves it is its dir's, so it is never
    signalled, and nothing proves it is not, so a dir of its uid made before it started is not stale. A dir made
    after it started is: it cannot be that dir's."""
    base = tmp_path / "qemu"  # root's, as a system libvirt's is
    base.mkdir(mode=0o755)
    held_dir, empty_dir = base / "qmp-HELD00", base / "qmp-EMPTY0"

    probe_shaped_dir(held_dir)
    victim = hung_process(held)  # root, named qemu-system-x86, started after the held dir was made
    try:
        wait_for(lambda: cmdline_blocks(victim.pid), 20, "its command line read to wait in the kernel")
        wait_for(lambda: time.time() - psutil.Process(victim.pid).create_time() > 2.0, 20, "the victim 2 s old")
        probe_shaped_dir(empty_dir)
        for d in (held_dir, empty_dir):  # both name it: a pidfile proves nothing
            (d / "qmp.pid").write_text(f"{victim.pid}\n")
        cfg = write_config(
            {
                "state_dir": str(state_dir),
                "libvirt": {"probe_dirs": [str(base)]},
                "detect": {"stale_dir_after": "1s"},
                "latency": {"enabled": False},
                "policies": [{"name": "clean", "on": "probe_dir_stale", "do": ["remove_stale_dir"]}],
            }
        )
        result = wait_for(
            lambda: (r := run_cli("-c", cfg, "remediate", "--json")) and r.json["actions"] and r, 20, "a removal"
        )
        assert [(a["subject"], a["result"]) for a in result.json["actions"]] == [(str(empty_dir), "ok")]
        assert not empty_dir.exists() and held_dir.is_dir(), "the dir its unread process may belong to stays"
        again = run_cli("-c", cfg, "check", "--json", "--no-latency")  # what it says of the dir, not of the host
        assert [f["kind"] for f in again.json["findings"] if f["subject"].startswith(str(base))] == [], again.out
        assert held.held and victim.poll() is None, "never signalled: still held"
    finally:
        held.release()
        victim.kill()
        victim.wait(30)
