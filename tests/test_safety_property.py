"""Property: over any process table and probe dirs, kill_probe only targets what the safety rule allows.

Process tables are generated as fake /proc trees (the PIDs are not real, so signals
are recorded, never sent); the rule is checked by an independent oracle written from
the contract's words, not by the code under test.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import pytest
from harness.findings import hung_probe
from harness.procs import process_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watchdogd.act.actions import KillProbe
from watchdogd.act.process_ender import ProcessEnder
from watchdogd.config import parse_config
from watchdogd.decide.evidence import Latency
from watchdogd.fsafe import BirthTime
from watchdogd.kinds import Kind, Severity
from watchdogd.model import Finding, Process
from watchdogd.observe.procfs import ProcFS
from watchdogd.observe.scan import Scanner
from watchdogd.state import StateStore

UPTIME = 1000.0
OWN_PID = 4242
LIBVIRTD = 77
DIRS = ["qmp-AAAAAA", "qmp-BBBBBB"]


class RecordingEnder(ProcessEnder):
    """The real verification path, with the signal recorded instead of sent."""

    def __init__(self, proc: ProcFS):
        super().__init__(proc, grace=0, use_pidfd=False)
        self.signalled: List[int] = []

    def _send(self, pidfd: Optional[int], seen: Process, sig: signal.Signals) -> bool:
        if self.same_process(seen) is None:
            return False
        self.signalled.append(seen.pid)
        return True

    def _wait_exit(self, pidfd: Optional[int], seen: Process, timeout: float) -> bool:
        return True


def cmdlines(base: str) -> st.SearchStrategy[List[str]]:
    d = st.sampled_from(DIRS + ["qmp-CCCCCC"])
    return st.one_of(
        d.map(lambda n: ["qemu", "-pidfile", f"{base}/{n}/qmp.pid", "-daemonize"]),
        d.map(lambda n: ["qemu", "-qmp", f"unix:{base}/{n}/qmp.monitor,server=on,wait=off"]),
        d.map(lambda n: ["qemu", "-pidfile", f"{base}/{n}/../qmp-CCCCCC/qmp.pid"]),
        d.map(lambda n: ["sleep", "600", f"{base}/{n}"]),
        st.just(["sleep", "600"]),
        st.just([]),
    )


def processes(base: str) -> st.SearchStrategy[Dict[int, Dict[str, Any]]]:
    pids = st.sampled_from([1, 2, LIBVIRTD, OWN_PID, 100, 101, 102, 103, 104, 105])
    proc = st.fixed_dictionaries(
        {
            "ppid": st.sampled_from([0, 1, LIBVIRTD, 100, 101, 102]),
            "comm": st.sampled_from(["qemu-system-x86", "qemu-kvm", "sleep", "bash", "libvirtd", "kvm"]),
            "state": st.sampled_from(["S", "R", "D", "Z"]),
            "start": st.sampled_from([10.0, UPTIME - 30, UPTIME - 0.2, UPTIME]),
            "cmdline": cmdlines(base),
            "uid": st.sampled_from([0, 65534]),
        }
    )
    return st.dictionaries(pids, proc, min_size=1, max_size=10)


def write_proc(root: Path, table: Dict[int, Dict[str, Any]]) -> None:
    (root / "sys" / "kernel").mkdir(parents=True)
    (root / "sys" / "kernel" / "pid_max").write_text("4194304\n")
    (root / "uptime").write_text(f"{UPTIME:.2f} 0.00\n")
    ticks = os.sysconf("SC_CLK_TCK")
    table = dict(table)
    table[LIBVIRTD] = {
        "ppid": 1,
        "comm": "libvirtd",
        "state": "S",
        "start": 5.0,
        "cmdline": ["/usr/sbin/libvirtd"],
        "uid": 0,
    }
    for pid, p in table.items():
        d = root / str(pid)
        d.mkdir()
        fields = [p["state"], str(p["ppid"])] + ["0"] * 17 + [str(int(p["start"] * ticks))] + ["0", "0"]
        (d / "stat").write_text(f"{pid} ({p['comm']}) {' '.join(fields)}\n")
        args = [] if p["state"] == "Z" else p["cmdline"]
        (d / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in args))
        os.chown(d, p["uid"], p["uid"])  # the scan takes a process's uid from its /proc dir's owner


def allowed(p: Process, probe_dir: str, made_wall: float, boot_wall: float, uids: Mapping[int, int]) -> bool:
    """The contract's rule, written out independently."""
    if p.pid in (1, OWN_PID, LIBVIRTD) or p.state == "Z":
        return False
    if uids[p.pid] != os.stat(probe_dir).st_uid:
        return False  # members run as the user that owns the dir
    if "qemu" not in p.comm and "kvm" not in p.comm:
        return False
    names = any(a == f"{probe_dir}/qmp.pid" or a.startswith(f"unix:{probe_dir}/qmp.monitor") for a in p.cmdline)
    return names and boot_wall + p.start_boot_s >= made_wall - 1.0


@pytest.mark.hostile
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(data=st.data())
def test_kill_probe_only_ever_targets_what_the_rule_allows(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    root = tmp_path_factory.mktemp("world")
    base = root / "lib"
    base.mkdir()
    table = data.draw(processes(str(base)))
    write_proc(root / "proc", table)
    for name in DIRS:
        (base / name).mkdir()
        owner = data.draw(st.sampled_from([0, 65534]))
        os.chown(base / name, owner, owner)
        pidfile = data.draw(
            st.one_of(
                st.sampled_from(list(table) + [1, LIBVIRTD, OWN_PID]).map(lambda p: f"{p}\n"), st.text(max_size=8)
            )
        )
        (base / name / "qmp.pid").write_text(pidfile)
    config = parse_config(
        f"state_dir: {root / 'state'}\nlibvirt:\n  probe_dirs: [{base}]\ndetect:\n  probe_hung_after: 1s\n", "c.yaml"
    )
    proc = ProcFS(str(root / "proc"))
    scanner = Scanner(config, proc, BirthTime(), StateStore(str(root / "state")), own_pid=OWN_PID)
    ender = RecordingEnder(proc)
    kill = KillProbe(config, scanner, ender)
    boot_wall = time.time() - UPTIME

    uids = {pid: p["uid"] for pid, p in table.items()}
    obs = scanner.observe()
    for probe in obs.probes:
        for member in probe.live_members:
            assert allowed(member.process, probe.path, probe.made_wall, boot_wall, uids), (probe.path, member)
        ender.signalled.clear()
        kill.run(hung_probe(probe.path))
        for pid in ender.signalled:
            assert allowed(process_of(proc, pid), probe.path, probe.made_wall, boot_wall, uids), (
                probe.path,
                pid,
                table.get(pid),
            )
    ender.signalled.clear()
    kill.run(Finding(Kind.DOMCAPS_HUNG, Severity.CRITICAL, "uri", 0.0, "", Latency("uri")))
    made = {p.path: p.made_wall for p in obs.probes}
    for pid in ender.signalled:
        assert any(allowed(process_of(proc, pid), path, m, boot_wall, uids) for path, m in made.items()), (
            pid,
            table.get(pid),
        )
