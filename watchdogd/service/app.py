"""The composition root: the one place that builds the real collaborators from a config.

`build` makes the per-config parts (rebuilt on every reload) as one `Pipeline`:
observe -> assess -> decide -> act, the path `check`, `remediate` and `run` all take.
`build_daemon` makes the long-lived ones (event sink, notifier, wake pipe, action
lanes, dir watch, the ledger read back from state) and hands them to the Daemon.
Everything else receives what it needs through its constructor and does no I/O
there, so tests build the same objects against a sandboxed libvirt and a temp state
dir, pass a fake where a seam's Protocol allows, and nothing reaches for globals.
"""

from __future__ import annotations

import threading
from typing import Callable, Mapping, Tuple

from ..act.actions import Actor, build_actions
from ..act.process_ender import ProcessEnder
from ..act.restart import LibvirtRestarter
from ..config import Config
from ..decide.policy import STATE_FILE, Lane, PolicyEngine, PolicyState
from ..diagnose import incidents, signatures
from ..diagnose.diagnostician import Diagnostician, Readers
from ..diagnose.history import KernelHistory
from ..diagnose.kvmtest import run_selftest
from ..diagnose.signatures import Signature
from ..fsafe import BirthTime
from ..observe import kernel_journal
from ..observe.capture import Capturer
from ..observe.capture_helper import HelpedCapturer
from ..observe.domain_logs import DomainLogs
from ..observe.latency import LatencyProbe, SocketActivation
from ..observe.libvirt_journal import ProbeFailures, open_journal, trust_for
from ..observe.procfs import ProcFS
from ..observe.scan import Scanner
from ..observe.slow_reads import SlowReads
from ..observe.watch import DirWatch
from ..problems import Problems
from ..report import diagnosis
from ..report.events import EventSink
from ..report.figures import Figures, NoOutlet, Outlet, restore_counters
from ..report.notify import Notifier
from ..report.status import restore
from ..safety import probe_arg_filter
from ..state import StateStore
from .daemon import Daemon
from .hooks import Hooks
from .pipeline import Pipeline, scan_once
from .preflight import ConfigSource
from .runner import ActionRunner, Waker
from .wiring import Wiring


def build(config: Config, proc_root: str = "/proc", read_only: bool = False) -> Pipeline:
    """read_only: for check and --dry-run, which must leave state_dir byte for byte as it was."""
    slow = SlowReads()  # one set of workers for every read a hung process can block, the scan's and the capture's
    proc = ProcFS(proc_root, keep_arg=probe_arg_filter(config.libvirt.probe_dirs), slow=slow)
    problems = Problems()  # one collector for the parts that may meet a problem; each look drains it
    state = StateStore(config.state_dir, problems=problems, read_only=read_only)
    # one scanner for the loop and for the actions' re-checks (it locks): one memory of
    # what was seen, so the re-check before a removal has the same clock-jump guard
    birth = BirthTime()
    scanner = Scanner(config, proc, birth, state)
    cancel = threading.Event()
    latency = None
    if config.latency.enabled:
        latency = LatencyProbe(config.libvirt.uri, config.latency.timeout, config.state_dir)
    engine = PolicyEngine(config, PolicyState.from_json(state.read_json(STATE_FILE)))
    lib = config.libvirt

    def connector(timeout: float) -> LatencyProbe:
        return LatencyProbe(lib.uri, timeout, lock_path=None, connect_only=True)

    restarter = LibvirtRestarter(lib.restart_command, lib.restart_timeout, connector, cancel=cancel)
    actions = build_actions(config, scanner, ProcessEnder(proc, config.actions.kill_grace), birth, restarter)
    actor = Actor(actions, engine)
    activated = SocketActivation()
    capturer = Capturer(proc_root, slow=slow) if proc_root != "/proc" else HelpedCapturer(slow=slow, problems=problems)
    readers = Readers(capturer, run_selftest)
    diagnostician = Diagnostician(config, state, readers, signature_table(config), KernelHistory.load(state))
    journal, why_not = open_journal()
    if why_not:
        problems.add(why_not)
    failures = ProbeFailures(journal, trust_for(config, proc.systemd), state)
    return Pipeline(
        config=config,
        proc=proc,
        state=state,
        scanner=scanner,
        latency=latency,
        engine=engine,
        actor=actor,
        diagnostician=diagnostician,
        failures=failures,
        domain_logs=DomainLogs(lib.log_dir, problems),
        activated=activated,
        cancel=cancel,
        problems=problems,
    )


def signature_table(config: Config, section: str = "signatures") -> Tuple[Signature, ...]:
    """The operator's table and the shipped one (the shipped one alone if the operator's broke since it was
    checked)."""
    return signatures.load_or_shipped(config.diagnose.signatures, section)


def outlet(config: Config, state: StateStore, figures: Figures) -> Outlet:
    """The metrics outlets the config asks for; the Prometheus client is imported only then."""
    if not (config.metrics.textfile or config.metrics.listen):
        return NoOutlet(config.metrics)
    from ..report.metrics import Metrics

    return Metrics(config.metrics, state, figures)


def build_daemon(
    source: ConfigSource,
    config: Config,
    environ: Mapping[str, str],
    sink: EventSink,
    use_inotify: bool = True,
    builder: Callable[[Config], Pipeline] = build,
) -> Daemon:
    """`kvm-watchdog run`'s long-lived parts, each made once, and the daemon that drives them (the sink is the
    caller's)."""
    parts = builder(config)
    # the daemon follows the kernel's hung-task lines as they come (a one-shot command reads none; `diagnose` reads
    # this boot's); a reload's pipeline takes this reader over
    parts.blocked, why_not = kernel_journal.BlockedTasks.opened()
    if why_not:
        parts.problems.add(why_not)
    waker = Waker()
    ledger, recent, condition = restore(parts.state)
    hooks = Hooks(config.hooks, sink, parts.state)
    sink.listeners.append(hooks.on_event)

    def watch_for(cfg: Config) -> DirWatch:
        return DirWatch(cfg.libvirt.probe_dirs, use_inotify, log_dir=cfg.libvirt.log_dir)

    figures = Figures(restore_counters(parts.state))

    def outlet_for(cfg: Config) -> Outlet:
        return outlet(cfg, parts.state, figures)

    wiring = Wiring(
        sink=sink,
        notifier=Notifier(environ),
        waker=waker,
        lanes={lane: ActionRunner(waker) for lane in Lane},
        watch=watch_for(config),
        ledger=ledger,
        recent=recent,
        condition=condition,
        hooks=hooks,
        builder=builder,
        watch_for=watch_for,
        figures=figures,
        outlet=outlet_for(config),
        outlet_for=outlet_for,
    )
    return Daemon(source, parts, wiring)


def diagnose_host(config: Config) -> diagnosis.DiagnoseReport:
    """Everything `kvm-watchdog diagnose` reports, from a read-only look (the self-test runs now)."""
    parts = build(config, read_only=True)
    kvm = run_selftest()
    kernel_lines, unread = kernel_journal.this_boot()
    if unread:
        parts.problems.add(unread)
    parts.blocked = kernel_journal.BlockedTasks.of_lines(kernel_lines)  # this boot's hung tasks, first and latest
    obs, findings = scan_once(parts, with_latency=False)
    domain_lines = DomainLogs(config.libvirt.log_dir, parts.problems, from_tail=True).poll()
    tables = diagnosis.Tables(signature_table(config), signature_table(config, "kernel"))
    recorded = (KernelHistory.load(parts.state).to_json(), incidents.recent(parts.state))
    errors = [str(e) for e in obs.errors + parts.problems.drain()]
    return diagnosis.report(
        kvm, (obs, findings), domain_lines, [k.text for k in kernel_lines], tables, recorded, errors
    )
