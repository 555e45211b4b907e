"""A hung hypervisor process never hangs its watchdog.

For real: a root process named like QEMU whose /proc/PID/cmdline read waits in the kernel (a
thread of it faults on a FUSE page the test's own FUSE server holds, another maps the file
again and so holds its memory-map lock; tests/harness/fuse_hold.py). Every scan would read
that command line; the daemon reads it off the loop, waits 0.25 s once, says so once, skips
that process from then on, keeps pinging systemd's watchdog, and still finds and ends the
real libvirt's genuine hung probe.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest
from harness.fixtures import StartDaemon, WriteConfig
from harness.fuse_hold import HeldFile, hung_process
from harness.journald import Journald
from harness.sandbox import LibvirtSandbox
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
