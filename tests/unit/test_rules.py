"""The pure rules on hand-made observations: what assess finds and what policy decides, in milliseconds."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from harness.findings import hung_probe

from watchdogd.act.actions import Actor, Alert
from watchdogd.act.result import ActionResult
from watchdogd.config import Config, DetectConfig, LatencyWhen, LimitsConfig, PolicyConfig
from watchdogd.decide.assess import assess
from watchdogd.decide.evidence import EmptyCache
from watchdogd.decide.policy import PolicyEngine
from watchdogd.kinds import Kind, Severity
from watchdogd.model import ActionName, Finding, Observation, PidfileRead, Probe, ProbeMember, Process, Role
from watchdogd.thresholds import is_hung, why_not_stale


def probe(age: float, live: bool) -> Probe:
    members = (ProbeMember(Process(10, 1, "S", "qemu", 0.0, uid=0), Role.DAEMON),) if live else ()
    return Probe("/l/qmp-AAAAAA", 0.0, age, PidfileRead(10 if live else None), members)


def finding(subject: str, proven: bool = True) -> Finding:
    return hung_probe(subject, proven)


def test_hung_and_stale_are_one_rule_each_at_their_thresholds() -> None:
    detect = DetectConfig(probe_hung_after=60.0, stale_dir_after=600.0)
    assert not is_hung(probe(59.9, live=True), detect) and is_hung(probe(60.0, live=True), detect)
    assert not is_hung(probe(9999, live=False), detect), "a dir with no live process is never hung"
    assert why_not_stale(probe(599, live=False), detect) == "no longer stale: it is newer than detect.stale_dir_after"
    assert why_not_stale(probe(600, live=False), detect) is None
    assert "belong to it" in str(why_not_stale(probe(9999, live=True), detect))


def test_kernel_changed_opens_only_when_a_last_good_kernel_is_known_and_differs() -> None:
    config = Config()

    def kinds(kernel_last_good: Optional[str] = None) -> List[str]:
        seen = Observation(
            taken_wall=0.0, kernel_release="6.1.0-27", cache_entries=("x.xml",), kernel_last_good=kernel_last_good
        )
        return [f.kind for f in assess(seen, config)]

    assert kinds(kernel_last_good="6.1.0-26") == ["kernel_changed"]
    assert kinds(kernel_last_good="6.1.0-27") == [] and kinds(kernel_last_good=None) == []
    [changed] = assess(
        Observation(taken_wall=0.0, kernel_release="6.1.0-27", kernel_last_good="6.1.0-26", cache_entries=("x.xml",)),
        config,
    )
    assert changed.severity == Severity.INFO and changed.evidence.to_json() == {
        "release": "6.1.0-27",
        "last_good": "6.1.0-26",
    }


def test_cooldown_is_the_least_time_between_two_firings_of_a_policy() -> None:
    config = Config(
        policies=(PolicyConfig(name="slow", on=Kind.PROBE_HUNG, do=(ActionName.KILL_PROBE,), cooldown=60.0),)
    )
    engine = PolicyEngine(config)
    assert [p.finding.subject for p in engine.decide([finding("/l/qmp-A00000")], now=0.0)] == ["/l/qmp-A00000"]
    both = [finding("/l/qmp-A00000"), finding("/l/qmp-B00000")]
    assert engine.decide(both, now=59.0) == [], "B waits out the cooldown"
    assert [p.finding.subject for p in engine.decide(both, now=60.0)] == ["/l/qmp-B00000"], (
        "and fires once it is over, A only once"
    )


def test_the_breaker_pauses_host_wide_actions_once_resumes_once_and_never_stops_a_kill() -> None:
    config = Config(limits=LimitsConfig(actions=2, per=100.0))
    engine = PolicyEngine(config)
    assert engine.admit(0.0) and engine.admit(1.0) and not engine.admit(2.0)
    assert engine.breaker_transition(2.0, wanted_more=True) == "paused"
    assert engine.breaker_transition(3.0, wanted_more=True) is None, "paused is reported once"
    hangs = [finding(f"/l/qmp-C0000{i}") for i in range(3)]
    assert [p.action for p in engine.decide(hangs, now=50.0)] == ["kill_probe"] * 3, (
        "while paused, the hung probes are still ended; only the reset waits"
    )
    assert engine.breaker_transition(99.0, wanted_more=False) is None, "both actions still inside the window"
    assert engine.breaker_transition(100.5, wanted_more=False) == "resumed", "the first one left it: room for one"
    assert engine.breaker_transition(101.0, wanted_more=False) is None, "resumed is reported once"
    assert [p.action for p in engine.decide(hangs, now=101.0)] == ["quarantine_cache", "restart_libvirt"], (
        "the reset that waited acts once the window has room"
    )


def test_alert_is_an_event_only_and_never_spends_the_budget() -> None:
    config = Config(
        policies=(PolicyConfig(name="tell", on=Kind.CACHE_EMPTY, do=(ActionName.ALERT,)),),
        limits=LimitsConfig(actions=1, per=3600.0),
    )
    engine = PolicyEngine(config)
    assert engine.admit(0.0), "the one action the window allows"
    actor = Actor({ActionName.ALERT: Alert()}, engine, clock=lambda: 1.0)
    empty = Finding(
        Kind.CACHE_EMPTY, Severity.WARNING, "/c", 0.0, "the cache is empty", EmptyCache("/c", 0, 0), proven=True
    )
    records, breaker = actor.execute(engine.decide([empty], now=1.0))
    assert [(r.action, r.result, r.detail) for r in records] == [("alert", "ok", "alert: the cache is empty")]
    assert breaker is None and engine.state.executed == [0.0], "alerts are not counted by the breaker"
    assert not records[0].changed_something


def test_a_dry_run_plans_every_action_and_does_none() -> None:
    engine = PolicyEngine(Config())
    planned = engine.decide([finding(f"/l/qmp-D0000{i}") for i in range(3)], now=10.0, dry_run=True)
    assert [p.action for p in planned] == ["kill_probe"] * 3 + ["quarantine_cache", "restart_libvirt"]
    assert all(p.dry_run for p in planned)

    class Never:
        def plan(self, f: Finding) -> str:
            return "kill it"

        def run(self, f: Finding) -> ActionResult:
            raise AssertionError("a dry run ran an action")

    records, _ = Actor({a: Never() for a in ActionName}, engine).execute(planned)
    assert [r.result for r in records] == ["dry_run"] * 5 and all(r.detail == "would kill it" for r in records)


def test_a_finding_in_its_grace_never_opens_and_one_that_outlasts_it_opens_once() -> None:
    from watchdogd.decide.ledger import FindingLedger

    ledger = FindingLedger()
    empty = Finding(Kind.CACHE_EMPTY, Severity.WARNING, "/c", 0.0, "m", EmptyCache("/c", 0, 0))
    grace = {Kind.CACHE_EMPTY: 30.0}
    assert ledger.update([empty], 100.0, grace=grace).opened == (), "a libvirt start: the cache is empty for a moment"
    assert ledger.due(grace) == (130.0,)
    assert ledger.update([], 101.5, grace=grace).opened == () and ledger.pending == {}, (
        "gone within its grace: never news"
    )
    ledger.update([empty], 200.0, grace=grace)
    assert ledger.update([empty], 229.0, grace=grace).opened == ()
    assert ledger.update([empty], 230.0, grace=grace).opened == (empty,)
    assert ledger.update([empty], 260.0, grace=grace).opened == (), "opened once"
    hung = hung_probe("/l/qmp-AAAAAA")
    assert ledger.update([empty, hung], 261.0, grace=grace).opened == (hung,), "kinds without a grace open at once"


def test_the_latency_call_never_wakes_libvirt_nor_keeps_an_idle_one_awake() -> None:
    from watchdogd.observe.latency import IDLE, why_not_connect

    idle = Observation(taken_wall=0.0)
    running = Observation(taken_wall=0.0, libvirt_pids=(42,))
    probing = Observation(taken_wall=0.0, libvirt_pids=(42,), probes=(probe(1.0, live=True),))
    guests = Observation(taken_wall=0.0, libvirt_pids=(42,), guests=(7, 8, 9))
    assert why_not_connect(idle, LatencyWhen.BUSY) == IDLE and why_not_connect(idle, LatencyWhen.RUNNING) == IDLE
    assert why_not_connect(idle, LatencyWhen.ALWAYS) is None
    assert (
        "left to idle out" in str(why_not_connect(running, LatencyWhen.BUSY))
        and why_not_connect(running, LatencyWhen.RUNNING) is None
    )
    assert why_not_connect(probing, LatencyWhen.BUSY) is None and why_not_connect(guests, LatencyWhen.BUSY) is None
    assert why_not_connect(None, LatencyWhen.BUSY) == "not before the first scan"


def test_cache_empty_is_expected_while_a_young_probe_runs() -> None:
    config = Config()
    young = Observation(taken_wall=0.0, libvirt_pids=(42,), cache_entries=(), probes=(probe(5.0, live=True),))
    assert [f.kind for f in assess(young, config)] == []
    nothing = Observation(taken_wall=0.0, libvirt_pids=(42,), cache_entries=())
    assert [f.kind for f in assess(nothing, config)] == ["cache_empty"]


def test_the_shipped_config_lists_every_key_at_its_default() -> None:
    import dataclasses
    from pathlib import Path

    from watchdogd.service.preflight import load_config

    shipped = load_config(str(Path(__file__).resolve().parents[2] / "config" / "kvm-watchdog.yaml"), True)
    assert dataclasses.replace(shipped, source=None) == Config(), (
        "the shipped file says what the defaults are, so deleting a line changes nothing"
    )
    text = (Path(__file__).resolve().parents[2] / "config" / "kvm-watchdog.yaml").read_text()
    for section in ("libvirt", "detect", "latency", "limits", "actions", "diagnose", "metrics"):
        for f in dataclasses.fields(getattr(Config(), section)):
            assert f"  {f.name}:" in text, f"{section}.{f.name} is not in the shipped config"


def test_report_once_goes_by_a_problems_key_not_its_words() -> None:
    from watchdogd.problems import Problem, Problems
    from watchdogd.state import StateError

    first = StateError("cannot write /s/status.json: No space left on device", "/s/status.json").problem()
    later = StateError("cannot write /s/status.json: Disk quota exceeded", "/s/status.json").problem()
    assert first != later and first.key == later.key == "state-write:/s/status.json"
    assert Problem("cannot read /d: Permission denied").key == "cannot read /d: Permission denied", (
        "words without a key are their own key"
    )
    assert str(Problem("x", key="y")) == "x"
    collector = Problems()
    collector.add("more than 2000 QEMU logs", "logs-many:/l")
    collector.add("more than 2001 QEMU logs", "logs-many:/l")  # a second poll before the scan drains
    assert [p.text for p in collector.drain()] == ["more than 2001 QEMU logs"] and collector.drain() == (), (
        "a scan takes each key once, with its newest words, and leaves nothing behind"
    )


def test_a_systemctl_that_cannot_answer_means_libvirts_idle_timer_is_respected(tmp_path: Path) -> None:
    """Where systemd's dir exists but systemctl cannot reach PID 1, the answer is "cannot tell", and that must read
    as socket-activated: latency calls then go out only while libvirt is busy, never on a timer that keeps an idle
    libvirt from exiting. (A systemctl of the test's own, as on a host whose PID 1 is no systemd: the laptop's own
    systemctl would answer.)"""
    from watchdogd.observe.latency import SocketActivation

    systemctl = tmp_path / "systemctl"
    systemctl.write_text(
        '#!/bin/sh\necho "System has not been booted with systemd as init system (PID 1)." >&2\nexit 1\n'
    )
    systemctl.chmod(0o755)
    ask = SocketActivation(systemd_dir=str(tmp_path), systemctl=str(systemctl))
    assert ask() is True
    missing = SocketActivation(systemd_dir=str(tmp_path), systemctl=str(tmp_path / "none"))
    assert missing() is True, "no systemctl at all: cannot tell either"
