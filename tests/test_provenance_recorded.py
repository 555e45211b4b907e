"""Provenance from the kernel, per process; held is not hung: the scan's proof, on recorded /proc trees.

The qemu uid owns every probe dir and may signal every probe (libvirt runs them as
that uid). What it can make must never prove a probe libvirt's: a process of its own
naming a dir once proven, a probe it holds with SIGSTOP or a debugger, a process it
names `libvirtd`. A probe is proven by its own members, in this scan: where systemd
runs, by the cgroup of libvirt's unit (which no unprivileged uid can enter); elsewhere
by being libvirtd's child (remembered per process, never per dir).

Recorded trees, but root's: a process's uid is its /proc dir's owner, so writing the
qemu uid's processes and root's libvirtd takes chown (not in `make unit`, which needs no root).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Dict, List

import pytest

from watchdogd.config import parse_config
from watchdogd.decide.assess import assess
from watchdogd.decide.evidence import HungProbe
from watchdogd.decide.policy import Lane, PolicyEngine, PolicyState
from watchdogd.fsafe import BirthTime
from watchdogd.model import Probe
from watchdogd.observe.procfs import ProcFS
from watchdogd.observe.scan import Scanner
from watchdogd.state import StateStore

UPTIME = 10_000.0
QEMU_UID = 64055
LIBVIRTD = 500
DIR = "qmp-ABC123"

pytestmark = pytest.mark.root


class World:
    """A recorded /proc and a probe base: processes written as the kernel shows them."""

    def __init__(self, root: Path, systemd: bool = False):
        self.root = root
        self.proc = root / "proc"
        self.base = root / "lib"
        (self.proc / "sys" / "kernel").mkdir(parents=True)
        (self.proc / "sys" / "kernel" / "pid_max").write_text("4194304\n")
        (self.proc / "uptime").write_text(f"{UPTIME:.2f} 0.00\n")
        self.base.mkdir()
        (self.base / DIR).mkdir()
        os.chown(self.base / DIR, QEMU_UID, QEMU_UID)
        self.systemd = systemd
        self.add(LIBVIRTD, "libvirtd", ppid=1, uid=0, start=5.0, cgroup="0::/system.slice/libvirtd.service\n")
        config = parse_config(
            f"state_dir: {root / 'state'}\nlibvirt:\n  probe_dirs: [{self.base}]\ndetect:\n  probe_hung_after: 0.5\n",
            "c.yaml",
        )
        assert config is not None
        self.config = config
        self.scanner = Scanner(
            config, ProcFS(str(self.proc), systemd=systemd), BirthTime(), StateStore(str(root / "state")), own_pid=99999
        )

    def add(self, pid: int, comm: str, ppid: int, **seen: Any) -> None:
        """seen: uid, state, start, args, cgroup, tracer (what the kernel would show; defaults: a fresh qemu-uid probe process)."""
        uid, state, start = seen.get("uid", QEMU_UID), seen.get("state", "S"), seen.get("start", UPTIME - 0.9)
        d = self.proc / str(pid)
        d.mkdir()
        ticks = os.sysconf("SC_CLK_TCK")
        fields = [state, str(ppid)] + ["0"] * 17 + [str(int(start * ticks))] + ["0", "0"]
        (d / "stat").write_text(f"{pid} ({comm}) {' '.join(fields)}\n")
        argv: List[str] = seen.get("args") or [
            "/usr/bin/qemu-system-x86_64",
            "-pidfile",
            f"{self.base}/{DIR}/qmp.pid",
            "-daemonize",
        ]
        (d / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in argv))
        (d / "cgroup").write_text(seen.get("cgroup", "0::/\n"))
        (d / "status").write_text(f"Name:\t{comm}\nState:\t{state}\nTracerPid:\t{seen.get('tracer', 0)}\nUid:\t{uid}\n")
        os.chown(d, uid, uid)

    def remove(self, pid: int) -> None:
        d = self.proc / str(pid)
        for f in d.iterdir():
            f.unlink()
        d.rmdir()

    def probe(self) -> Probe:
        [probe] = self.scanner.observe(full=True).probes
        return probe


def test_a_probe_is_proven_by_its_own_processes_never_by_a_dir_proven_before(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.add(600, "qemu-system-x86", ppid=LIBVIRTD)  # libvirt's first process
    assert world.probe().proof == f"first process 600 is a child of libvirtd {LIBVIRTD} (uid 0)"
    world.remove(600)
    world.add(700, "qemu-system-x86", ppid=1)  # the qemu uid's own, naming the same (still there) dir
    probe = world.probe()
    assert probe.live_members and probe.proof is None, "a dir proven once proves nothing about the next process in it"


def test_where_systemd_runs_libvirts_unit_cgroup_is_the_proof_and_nothing_else_is(tmp_path: Path) -> None:
    world = World(tmp_path, systemd=True)
    # re-parented, but in libvirt's unit
    world.add(600, "qemu-system-x86", ppid=1, cgroup="0::/system.slice/libvirtd.service\n")
    assert world.probe().proof == "daemon process 600 runs in libvirtd.service's cgroup"
    world.remove(600)
    world.add(
        601,
        "qemu-system-x86",
        ppid=LIBVIRTD,
        cgroup="0::/user.slice/user-64055.slice/user@64055.service/app.slice/libvirtd.service\n",
    )
    assert world.probe().proof is None, (
        "a unit of the user's own manager named libvirtd.service proves nothing; nor does parentage where cgroups tell"
    )
    world.remove(601)
    world.add(602, "qemu-system-x86", ppid=1, cgroup="1:name=systemd:/system.slice/virtqemud.service\n0::/\n")
    assert world.probe().proof == "daemon process 602 runs in virtqemud.service's cgroup", (
        "the modular daemons, on a hybrid (v1) host"
    )


def test_a_held_probe_is_not_hung_never_proven_and_never_counted_toward_a_restart(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.add(600, "qemu-system-x86", ppid=LIBVIRTD, state="T")  # SIGSTOPped by its own uid
    probe = world.probe()
    assert probe.proof is not None and probe.held == "first process 600 is stopped (state T)"
    [hung] = [f for f in assess(world.scanner.observe(full=True), world.config) if f.kind == "probe_hung"]
    assert (
        not hung.proven
        and isinstance(hung.evidence, HungProbe)
        and hung.evidence.held == probe.held
        and "Held, not hung" in hung.message
    )
    engine = PolicyEngine(world.config, PolicyState())
    planned = []
    for n in range(4):  # four held probes in an hour: the shipped reset policy wants three
        evidence = dataclasses.replace(hung.evidence, probe_dir=f"{hung.subject}-{n}")
        planned += engine.decide(
            [dataclasses.replace(hung, subject=f"{hung.subject}-{n}", evidence=evidence)], 1000.0 + n
        )
    assert {p.action for p in planned} == {"kill_probe"}, "ended on the unproven lane; never a quarantine or a restart"
    assert all(p.lane is Lane.UNPROVEN for p in planned)


def test_a_traced_probe_is_held_too(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.add(600, "qemu-system-x86", ppid=LIBVIRTD, tracer=4242)
    assert world.probe().held == "first process 600 is traced by pid 4242"


def test_a_process_of_another_uid_named_libvirtd_is_no_libvirt(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.remove(LIBVIRTD)
    world.add(LIBVIRTD, "libvirtd", ppid=1, uid=65534, args=["/tmp/libvirtd"])
    world.add(600, "qemu-system-x86", ppid=LIBVIRTD)
    obs = world.scanner.observe(full=True)
    assert obs.libvirt_pids == () and obs.probes[0].proof is None, (
        "libvirt is not running, and nobody's libvirtd proves nothing"
    )
    kinds: Dict[str, bool] = {f.kind: f.proven for f in assess(obs, world.config)}
    assert "cache_empty" not in kinds or not kinds["cache_empty"]
