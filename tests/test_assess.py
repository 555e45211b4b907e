"""Pure assessment rules that the real daemon rarely shows on demand."""

from __future__ import annotations

from typing import cast

from watchdogd.act.actions import KillProbe
from watchdogd.act.process_ender import ProcessEnder
from watchdogd.act.result import ActionResult
from watchdogd.config import Config
from watchdogd.decide.assess import assess
from watchdogd.model import Defunct, Observation, Process
from watchdogd.observe.scan import Scanner


def zombie_under_libvirt(age: float) -> Observation:
    libvirtd = Process(pid=77, ppid=1, state="S", comm="libvirtd", start_boot_s=1.0, cmdline=("/usr/sbin/libvirtd",))
    zombie = Process(pid=90, ppid=77, state="Z", comm="qemu-system-x86", start_boot_s=900.0)
    return Observation(
        taken_wall=10_000.0,
        uptime_s=1000.0,
        libvirt_pids=(77,),
        defunct=(Defunct(zombie, libvirtd, "libvirt", None, age),),
    )


def test_a_zombie_libvirt_has_not_reaped_is_reported_with_libvirt_as_its_parent() -> None:
    [finding] = assess(zombie_under_libvirt(age=120), Config())
    assert finding.kind == "probe_defunct" and finding.subject == "libvirt pid 77"
    assert "only libvirt can reap it" in finding.message
    assert finding.to_json()["evidence"]["zombies"] == [
        {"pid": 90, "parent_pid": 77, "parent_comm": "libvirtd", "parent_kind": "libvirt", "age_s": 120}
    ]
    # kill_probe has nothing it may do about it: only restart_libvirt resolves it
    done = KillProbe(Config(), scanner=cast(Scanner, None), ender=cast(ProcessEnder, None)).run(finding)
    assert done == ActionResult.skipped("the zombies' parent is libvirt itself; only restart_libvirt resolves that")


def test_a_zombie_for_a_moment_is_how_every_probe_starts() -> None:
    assert assess(zombie_under_libvirt(age=0.2), Config()) == []
