"""The trust rules as pure logic, on hand-made findings: which evidence may escalate, and which budget pays."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import List

from harness.findings import hung_probe, stale_dir

from watchdogd.act.actions import Actor
from watchdogd.act.quarantine import quarantine_cache
from watchdogd.act.result import ActionResult
from watchdogd.config import Config, LimitsConfig
from watchdogd.decide.evidence import Latency
from watchdogd.decide.grounds import of_libvirt_call, of_probe
from watchdogd.decide.policy import Lane, PolicyEngine
from watchdogd.kinds import Kind, Severity
from watchdogd.model import ActionName, Finding, Grounds, Observation, PidfileRead, Probe, ProbeMember, Process, Role
from watchdogd.observe.membership import Maker, Membership
from watchdogd.observe.probe_dirs import DirRead
from watchdogd.observe.procfs import ProcFS
from watchdogd.observe.provenance import Provenance
from watchdogd.observe.view import ProcessView
from watchdogd.safety import Protected
from watchdogd.thresholds import ProbeState, probe_state, why_not_stale


def hung(n: int, proven: bool) -> List[Finding]:
    tag = "P" if proven else "F"
    return [hung_probe(f"/l/qmp-{tag}{i:05d}", proven) for i in range(n)]


def test_forged_probes_are_killed_but_never_counted_toward_an_escalation() -> None:
    engine = PolicyEngine(Config())
    planned = engine.decide(hung(10, proven=False), now=100.0)
    assert {p.action for p in planned} == {"kill_probe"}, "host-wide actions never act on forgeable evidence"
    assert len(planned) == 10 and all(p.lane is Lane.UNPROVEN for p in planned)


def test_three_proven_hangs_escalate_once_and_forged_ones_do_not_help_reach_three() -> None:
    engine = PolicyEngine(Config())
    findings = hung(2, proven=True) + hung(5, proven=False)
    assert "restart_libvirt" not in {p.action for p in engine.decide(findings, now=100.0)}, (
        "2 proven + 5 forged is not 3"
    )
    findings += hung(3, proven=True)[2:]
    escalated = [p for p in engine.decide(findings, now=101.0) if p.action in ("quarantine_cache", "restart_libvirt")]
    assert [(p.action, p.lane) for p in escalated] == [
        ("quarantine_cache", Lane.PROVEN),
        ("restart_libvirt", Lane.PROVEN),
    ]


def test_libvirt_level_kinds_are_proven_and_dir_kinds_never_are() -> None:
    def kind(k: Kind) -> Finding:
        return Finding(k, Severity.CRITICAL, "s", 0.0, "m", Latency("qemu:///system"))

    assert kind(Kind.DOMCAPS_HUNG).proven and kind(Kind.DOMCAPS_FAILED).proven and kind(Kind.LIBVIRT_UNREACHABLE).proven
    assert not stale_dir("/l/qmp-AAAAAA").proven and not hung_probe("/l/qmp-AAAAAA", proven=False).proven
    assert hung_probe("/l/qmp-AAAAAA", proven=True).proven
    assert hung_probe("/l/qmp-AAAAAA", proven=True).to_json()["evidence"]["proven_libvirt"] is True, (
        "operators read it in the JSON"
    )


class _Ok:
    def plan(self, finding: Finding) -> str:
        return "nothing"

    def run(self, finding: Finding) -> ActionResult:
        return ActionResult.ok("")


def test_a_spent_unproven_budget_never_pauses_nor_holds_proven_remediation() -> None:
    config = Config(limits=LimitsConfig(actions=5, unproven_actions=3, per=3600.0))
    engine = PolicyEngine(config)
    actor = Actor({ActionName.KILL_PROBE: _Ok()}, engine, clock=lambda: 100.0)
    records, breaker = actor.execute(engine.decide(hung(6, proven=False), now=100.0))
    assert [r.result for r in records] == ["ok", "ok", "ok", "skipped"] and breaker is None
    assert "unproven budget spent" in records[-1].detail and not engine.state.paused
    assert engine.decide(hung(4, proven=False), now=100.0) == [], "the unproven lane waits for room; no record per scan"
    records, breaker = actor.execute(engine.decide(hung(2, proven=True), now=100.0))
    assert [r.result for r in records] == ["ok", "ok"] and breaker is None, "proven probes are still killed"


def test_policy_memory_is_bounded_per_kind() -> None:
    from watchdogd.decide.policy import MAX_SUBJECTS

    engine = PolicyEngine(Config())
    engine.observe(hung(MAX_SUBJECTS + 500, proven=False), now=1.0)
    assert len(engine.state.occurrences["probe_hung"]) == MAX_SUBJECTS


def test_prune_never_removes_the_set_just_made_even_after_the_clock_stepped_back(tmp_path: Path) -> None:
    cache, root = tmp_path / "cache", tmp_path / "quarantine"
    cache.mkdir()
    for t in (1_700_000_300, 1_700_000_200):
        (cache / "entry.xml").write_text(str(t))
        quarantine_cache(str(cache), str(root), keep=1, now=t)  # the second "now" is earlier: a backward step
    [kept] = os.listdir(root)
    assert (root / kept / "entry.xml").read_text() == "1700000200", (
        "the newest set (made last) is kept, whatever its name"
    )


def test_a_second_quarantine_in_the_same_second_gets_its_own_set(tmp_path: Path) -> None:
    cache, root = tmp_path / "cache", tmp_path / "quarantine"
    cache.mkdir()
    for n in range(2):
        (cache / "entry.xml").write_text(str(n))
        quarantine_cache(str(cache), str(root), keep=5, now=1_700_000_000)
    assert sorted((root / d / "entry.xml").read_text() for d in os.listdir(root)) == ["0", "1"]


def test_a_new_occurrence_in_a_dir_acted_on_before_is_acted_on_again_and_counted_once_each() -> None:
    """A genuine probe's dir the qemu user kept (libvirt's rmdir failed) and names from its own process: a new
    occurrence, ended anew; and recurrences of one subject (libvirt's own uri) count toward `times` each."""
    engine = PolicyEngine(Config())
    [genuine] = hung(1, proven=True)
    assert [p.action for p in engine.decide([genuine], now=100.0)] == ["kill_probe"]
    assert engine.decide([genuine], now=101.0) == [], "one firing per occurrence while it lasts"
    assert engine.decide([], now=102.0) == [], "it ended"
    forged = hung_probe(genuine.subject, proven=False, since=110.0)
    assert [p.action for p in engine.decide([forged], now=112.0)] == ["kill_probe"], (
        "the qemu user's own process in that dir is ended too"
    )
    assert all(p.lane is Lane.UNPROVEN for p in engine.decide([], now=113.0) + engine.decide([forged], now=120.0))
    hang = [Finding(Kind.DOMCAPS_HUNG, Severity.CRITICAL, "qemu:///system", 0.0, "m", Latency("qemu:///system"))]
    engine = PolicyEngine(Config())
    from watchdogd.config import PolicyConfig

    engine.policies = (
        PolicyConfig(name="reset", on=Kind.DOMCAPS_HUNG, do=(ActionName.RESTART_LIBVIRT,), times=3, within=3600.0),
    )
    fired = []
    for t in range(3):  # three separate hangs of the same libvirt, each ended in between
        fired += engine.decide(hang, now=200.0 + 10 * t)
        engine.decide([], now=205.0 + 10 * t)
    assert [p.action for p in fired] == ["restart_libvirt"], "the third hang of one subject crosses times: 3"


# ---- the rule: what the qemu user can cause only ever gets its own processes ended ----------------------------------


def _probe(path: str, uid: int, proof: bool = True, held: bool = False) -> Probe:
    first = Process(pid=100, ppid=1, state="S", comm="qemu-system-x86", start_boot_s=1.0, uid=uid)
    return Probe(
        path=path,
        made_wall=0.0,
        age_s=61.0,
        pidfile=PidfileRead(None, "missing"),
        members=(ProbeMember(first, Role.FIRST),),
        owner_uid=uid,
        proof="first process 100 runs in libvirtd.service's cgroup" if proof else None,
        as_libvirt=uid == 0,
        held="first process 100 is stopped (state T)" if held else None,
    )


def test_a_probe_libvirt_runs_as_the_qemu_user_is_killed_and_never_escalates() -> None:
    """The qemu user makes its own genuine probes hang (a FIFO at qmp.pid): each is ended, none resets the host."""
    config = Config()
    libvirts = [
        Finding(
            Kind.PROBE_HUNG,
            Severity.CRITICAL,
            f"/l/qmp-Q{i:05d}",
            0.0,
            "m",
            grounds=of_probe(_probe("/l", 64055), config),
        )
        for i in range(13)
    ]
    assert all(f.proven and not f.host_wide_ok for f in libvirts), "libvirt's (proven), but in that user's hands"
    planned = PolicyEngine(config).decide(libvirts, now=100.0)
    assert [p.action for p in planned] == ["kill_probe"] * 13, "13 kills, no quarantine, no restart"
    widened = replace(config, libvirt=replace(config.libvirt, qemu_probes_host_wide=True))
    assert of_probe(_probe("/l", 64055), widened) is Grounds.HOST, "what an operator gives up by widening it"


def test_a_probe_libvirt_runs_as_root_escalates_as_on_the_incidents_host() -> None:
    config = Config()
    assert of_probe(_probe("/l", 0), config) is Grounds.HOST
    assert of_probe(_probe("/l", 0, held=True), config) is Grounds.FORGEABLE, "held by a debugger: never host-wide"
    assert of_probe(_probe("/l", 0, proof=False), config) is Grounds.FORGEABLE
    root_hangs = [
        Finding(
            Kind.PROBE_HUNG, Severity.CRITICAL, f"/l/qmp-R{i:05d}", 0.0, "m", grounds=of_probe(_probe("/l", 0), config)
        )
        for i in range(3)
    ]
    planned = PolicyEngine(config).decide(root_hangs, now=100.0)
    assert [p.action for p in planned] == ["kill_probe"] * 3 + ["quarantine_cache", "restart_libvirt"]


def test_libvirt_stuck_is_host_grade_only_where_no_probe_of_the_qemu_users_explains_it() -> None:
    config = Config()
    in_flight = Observation(taken_wall=0.0, probes=(_probe("/l/qmp-AAAAAA", 64055),), probes_as_libvirt=False)
    idle = Observation(taken_wall=0.0, probes_as_libvirt=False)
    assert of_libvirt_call("domcaps_hung", in_flight, config) is Grounds.LIBVIRTS, "libvirt waits on that probe"
    assert of_libvirt_call("domcaps_hung", idle, config) is Grounds.HOST, "stuck on what no probe explains"
    assert of_libvirt_call("domcaps_failed", idle, config) is Grounds.LIBVIRTS, "that user can end its own probe"
    root_probes = Observation(taken_wall=0.0, probes=(_probe("/l/qmp-AAAAAA", 0),), probes_as_libvirt=True)
    assert of_libvirt_call("domcaps_failed", root_probes, config) is Grounds.HOST


def test_a_spent_host_wide_budget_never_stops_a_kill() -> None:
    config = Config(limits=LimitsConfig(actions=1, per=3600.0))
    engine = PolicyEngine(config)
    ok = _Ok()
    actor = Actor(
        {ActionName.KILL_PROBE: ok, ActionName.QUARANTINE_CACHE: ok, ActionName.RESTART_LIBVIRT: ok},
        engine,
        clock=lambda: 100.0,
    )
    records, breaker = actor.execute(engine.decide(hung(3, proven=True), now=100.0))
    assert [(r.action, r.result) for r in records] == [("kill_probe", "ok")] * 3 + [
        ("quarantine_cache", "ok"),
        ("restart_libvirt", "skipped"),
    ]
    assert breaker == "paused" and "kills of hung probes go on" in records[-1].detail
    records, _ = actor.execute(engine.decide(hung(6, proven=True)[3:], now=101.0))
    assert [(r.action, r.result) for r in records] == [("kill_probe", "ok")] * 3, "paused, and still killing"


def test_a_dir_is_never_stale_while_a_process_that_may_be_its_own_cannot_be_read() -> None:
    """A probe whose memory-map lock is held: its command line does not answer, so nothing proves it is the dir's
    (never a member, never signalled), and nothing proves it is not: its dir is not stale, so not removed."""
    config = Config()
    base, uid, made = "/l", 107, 1050.0  # the machine booted at 1000, the dir made 50 s later
    path = f"{base}/qmp-AAAAAA"

    def unread(pid: int, comm: str = "qemu-system-x86", owner: int = uid, start: float = 60.0) -> Process:
        return Process(pid, 1, "D", comm, start_boot_s=start, uid=owner, cmdline_unread=True)

    def seen(*procs: Process) -> Probe:
        view = ProcessView({p.pid: p for p in procs}, Protected(own_pid=2, libvirt_pids={3}), now=1200.0, uptime=200.0)
        membership = Membership(config, ProcFS(), Provenance(config, ProcFS()))
        read = DirRead(path, made, uid, PidfileRead(None, "missing"))
        return membership.probe(read, view, Maker(0, frozenset({3})), lambda _, wall_age: wall_age)

    old_enough = replace(config.detect, stale_dir_after=60.0)
    alone = seen()
    assert why_not_stale(alone, old_enough) is None, "no process: the dir is stale"
    maybe = seen(unread(40))
    assert maybe.unread_pids == (40,) and not maybe.members, "it may be the dir's, and it is never a member"
    assert why_not_stale(maybe, old_enough) == (
        "not stale: pids 40 may belong to it (their command lines could not be read)"
    )
    assert probe_state(maybe, old_enough) is ProbeState.LEFT
    # whatever else rules it out still does: another uid, no emulator's name, started before the dir, libvirt itself
    for other in (unread(41, owner=0), unread(42, comm="bash"), unread(43, start=10.0), unread(3)):
        assert seen(other).unread_pids == (), other
    # a flood of them names a few, the newest first: one keeps the dir, and no dir reads them all
    flood = [unread(100 + i, start=60.0 + i / 100) for i in range(2000)]
    assert seen(*flood).unread_pids == (2099, 2098, 2097, 2096)
