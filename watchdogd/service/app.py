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
from typing import Callable, Mapping, Optional, TextIO

from ..act.actions import Actor, build_actions
from ..act.killer import ProcessEnder
from ..act.restart import LibvirtRestarter
from ..config import Config
from ..decide.policy import STATE_FILE, PolicyEngine, PolicyState
from ..fsafe import BirthTime, read_pid_max
from ..observe.latency import LatencyProbe
from ..observe.procfs import ProcFS
from ..observe.scan import Scanner
from ..observe.watch import DirWatch
from ..report.events import EventSink, journal_sender
from ..report.figures import Figures, NoOutlet, Outlet, restore_counters
from ..report.notify import Notifier
from ..report.status import restore
from ..safety import probe_arg_filter
from ..state import StateStore
from .daemon import ConfigSource, Daemon, Wiring
from .pipeline import Pipeline
from .runner import ActionRunner, Waker


def build(config: Config, proc_root: str = "/proc", read_only: bool = False) -> Pipeline:
    """read_only: for check and --dry-run, which must leave state_dir byte for byte as it was."""
    proc = ProcFS(proc_root, keep_arg=probe_arg_filter(config.libvirt.probe_dirs))
    state = StateStore(config.state_dir, read_only=read_only)
    # one scanner for the loop and for the actions' re-checks (it locks): one memory of
    # what was seen, so the re-check before a removal has the same clock-jump guard
    birth = BirthTime()
    scanner = Scanner(config, proc, birth, state, pid_max=read_pid_max(proc_root))
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
    return Pipeline(config=config, proc=proc, state=state, scanner=scanner, latency=latency, engine=engine, actor=actor, cancel=cancel)


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
    stream: TextIO,
    echo: Optional[TextIO] = None,
    use_inotify: bool = True,
    builder: Callable[[Config], Pipeline] = build,
    sink: Optional[EventSink] = None,
) -> Daemon:
    """`kvm-watchdog run`'s long-lived parts, each made once, and the daemon that drives them."""
    parts = builder(config)
    waker = Waker()
    ledger, recent = restore(parts.state)

    def watch_for(cfg: Config) -> DirWatch:
        return DirWatch(cfg.libvirt.probe_dirs, use_inotify)

    figures = Figures(restore_counters(parts.state))

    def outlet_for(cfg: Config) -> Outlet:
        return outlet(cfg, parts.state, figures)

    wiring = Wiring(
        sink=sink or EventSink(config.events, journal_sender(), stream=stream, echo=echo),
        notifier=Notifier(environ),
        waker=waker,
        lanes={True: ActionRunner(waker), False: ActionRunner(waker)},  # proven, unproven
        watch=watch_for(config),
        ledger=ledger,
        recent=recent,
        builder=builder,
        watch_for=watch_for,
        figures=figures,
        outlet=outlet_for(config),
        outlet_for=outlet_for,
    )
    return Daemon(source, parts, wiring)
