"""The composition root: the one place that builds the real collaborators from a config.

Everything else receives what it needs through its constructor, so tests build the
same objects against a sandboxed libvirt and a temp state dir, and nothing reaches
for globals.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from ..act.actions import ActionRecord, Actor, build_actions
from ..act.killer import ProcessEnder
from ..config import Config
from ..decide.assess import assess
from ..decide.policy import STATE_FILE, PolicyEngine, PolicyState
from ..fsafe import BirthTime
from ..model import Finding, Observation
from ..observe.latency import LatencyProbe
from ..observe.procfs import ProcFS
from ..observe.scan import Scanner
from ..safety import probe_arg_filter
from ..state import StateError, StateStore


@dataclass
class Components:
    config: Config
    proc: ProcFS
    state: StateStore
    scanner: Scanner
    latency: Optional[LatencyProbe]
    engine: PolicyEngine
    actor: Actor
    cancel: threading.Event = field(default_factory=threading.Event)  # set: end long actions now


def build(config: Config, proc_root: str = "/proc", read_only: bool = False) -> Components:
    """read_only: for check and --dry-run, which must leave state_dir byte for byte as it was."""
    proc = ProcFS(proc_root, keep_arg=probe_arg_filter(config.libvirt.probe_dirs))
    state = StateStore(config.state_dir, read_only=read_only)
    scanner = Scanner(config, proc, BirthTime(), state)
    # the actions re-observe on their own scanner: the daemon runs them on worker threads
    action_scanner = Scanner(config, proc, BirthTime(), StateStore(config.state_dir, read_only=read_only))
    cancel = threading.Event()
    latency = None
    if config.latency.enabled:
        latency = LatencyProbe(config.libvirt.uri, config.latency.timeout, config.state_dir)
    engine = PolicyEngine(config, PolicyState.from_json(state.read_json(STATE_FILE)))
    actions = build_actions(config, action_scanner, ProcessEnder(proc, config.actions.kill_grace), cancel)
    actor = Actor(actions, engine)
    return Components(config=config, proc=proc, state=state, scanner=scanner, latency=latency, engine=engine, actor=actor, cancel=cancel)


def scan_once(parts: Components, with_latency: bool = True) -> Tuple[Observation, List[Finding]]:
    """One full, read-only scan: the latency probe first (it may fill the cache), then the rest."""
    latency = parts.latency.run() if (with_latency and parts.latency is not None) else None
    obs = parts.scanner.observe(latency)
    return obs, assess(obs, parts.config)


@dataclass
class Remediation:
    before: List[Finding]
    actions: List[ActionRecord]
    breaker: Optional[str]  # "paused" / "resumed" when the breaker changed
    after: Observation
    findings: List[Finding]  # what is left after acting
    problems: List[str]  # state that could not be saved, and the like


def remediate_once(parts: Components, dry_run: bool = False, with_latency: bool = True) -> Remediation:
    """One scan, the policies applied once, then a fresh scan of what is left."""
    obs, findings = scan_once(parts, with_latency)
    planned = parts.engine.decide(findings, obs.taken_wall, dry_run=dry_run)
    records, breaker = parts.actor.execute(planned)
    problems: List[str] = []
    if not dry_run:
        problems += save_progress(parts, obs)
    acted = any(r.changed_something for r in records)
    if acted:
        after, left = scan_once(parts, with_latency)
    else:
        after, left = obs, findings
    return Remediation(findings, records, breaker, after, left, problems)


def save_progress(parts: Components, obs: Observation) -> List[str]:
    """Persist the policy counters and, when probing worked, the kernel it worked on."""
    problems = []
    try:
        parts.state.write_json(STATE_FILE, parts.engine.snapshot())
    except StateError as exc:
        problems.append(f"{exc}; policy counters are kept in memory only")
    lat = obs.latency
    if lat is not None and lat.answered:
        try:
            parts.state.record_good_kernel(obs.kernel_release)
        except StateError as exc:
            problems.append(str(exc))
    return problems
