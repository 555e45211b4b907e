"""Why a VM did not start, from what the domain-log monitor read: a signature's match opens a failure per domain.

The monitor (observe.domain_logs) hands on the lines each domain's QEMU log gained; here they are matched
against the signature table. A match opens a VM start failure, with the matched line and the few after it; a
later "starting up" line followed by no failure for CLEAN_START_AFTER ends it, as does thresholds.vm_failure_kept_for
without news. Read at every scan and, between scans, as soon as inotify says a log grew (so a failure is told
within a second whatever `interval` is).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from ..observe.domain_logs import DomainLines
from .signatures import FAILED, STARTING, Signature, match

CLEAN_START_AFTER = 5.0  # seconds after a "starting up" line with no failure: the domain started cleanly
MAX_DOMAINS = 1000  # domains read per call
MAX_CONTEXT = 20  # lines kept of one failure


@dataclass
class VmFailure:
    domain: str
    log: str
    cause: str
    what_to_do: str
    lines: List[str]
    since: float
    restarted_at: Optional[float] = None  # a later start attempt was seen


class VmStarts:
    """The VM start failures open, per domain."""

    def __init__(self, log_dir: str, table: Tuple[Signature, ...], kept_for: float):
        self.log_dir = log_dir
        self.table = table
        self.kept_for = kept_for
        self.failures: Dict[str, VmFailure] = {}

    def read(self, logged: DomainLines, now: float) -> bool:
        """What the domains' logs said since the last read; True when a VM start failure opened or ended."""
        before = self._keys()
        for domain, lines in list(logged.items())[:MAX_DOMAINS]:
            self._read_domain(domain, lines, now)
        return self._keys() != before

    def _keys(self) -> Tuple[Tuple[str, float, bool], ...]:
        return tuple(sorted((d, f.since, f.restarted_at is None) for d, f in self.failures.items()))

    def due(self) -> List[float]:
        """Wall times at which an open VM start failure may end (a clean start settled, or it aged out): scans then."""
        out = [f.restarted_at + CLEAN_START_AFTER for f in self.failures.values() if f.restarted_at is not None]
        return out + [f.since + self.kept_for for f in self.failures.values()]

    def current(self, now: float) -> Tuple[VmFailure, ...]:
        """The open VM start failures; one whose domain since started cleanly (or that is old) is dropped."""
        for domain, f in list(self.failures.items()):
            clean = f.restarted_at is not None and now - f.restarted_at >= CLEAN_START_AFTER
            if clean or now - f.since >= self.kept_for:
                del self.failures[domain]
        return tuple(sorted(self.failures.values(), key=lambda f: f.domain))

    def _read_domain(self, domain: str, lines: List[str], now: float) -> None:
        log = os.path.join(self.log_dir, domain + ".log")
        for index, line in enumerate(lines):
            if STARTING.search(line) and domain in self.failures:
                self.failures[domain].restarted_at = now
            hits = [m for m in match([line], self.table) if m.signature.alert]
            if hits or (FAILED.search(line) and domain in self.failures):
                current = self.failures.get(domain)
                if hits and (current is None or current.restarted_at is not None):
                    # the matched line first
                    context = [line[:300]] + [raw[:300] for raw in lines[index + 1 : index + 4]]
                    sig = hits[0].signature
                    self.failures[domain] = VmFailure(domain, log, sig.cause, sig.what_to_do, context, now)
                elif current is not None:
                    current.restarted_at = None  # this attempt failed too
                    if hits and len(current.lines) < MAX_CONTEXT:
                        current.lines.append(line[:300])
