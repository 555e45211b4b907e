"""The composition root: the one place that builds the real collaborators from a config.

Everything else receives what it needs through its constructor, so tests build the
same objects against a sandboxed libvirt and a temp state dir, and nothing reaches
for globals.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

from .assess import assess
from .config import Config
from .fsafe import BirthTime
from .latency import LatencyProbe
from .model import Finding, Observation
from .procfs import ProcFS
from .scan import Scanner
from .state import StateStore


@dataclass
class Components:
    config: Config
    proc: ProcFS
    state: StateStore
    scanner: Scanner
    latency: Optional[LatencyProbe]


def build(config: Config, proc_root: str = "/proc") -> Components:
    proc = ProcFS(proc_root)
    state = StateStore(config.state_dir)
    scanner = Scanner(config, proc, BirthTime(), state)
    latency = None
    if config.latency.enabled:
        lock = os.path.join(config.state_dir, "latency.lock")
        latency = LatencyProbe(config.libvirt.uri, config.latency.timeout, lock)
    return Components(config=config, proc=proc, state=state, scanner=scanner, latency=latency)


def scan_once(parts: Components, with_latency: bool = True) -> Tuple[Observation, List[Finding]]:
    """One full, read-only scan: the latency probe first (it may fill the cache), then the rest."""
    latency = parts.latency.run() if (with_latency and parts.latency is not None) else None
    obs = parts.scanner.observe(latency)
    return obs, assess(obs, parts.config)
