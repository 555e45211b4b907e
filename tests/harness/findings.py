"""Findings as assess makes them, for the rule tests: typed evidence with only what a test cares about set."""

from __future__ import annotations

from typing import Sequence

from watchdogd.causes import Cause
from watchdogd.decide.evidence import HungProbe, StaleDir
from watchdogd.diagnose.classify import Diagnosis
from watchdogd.kinds import FINDING_KINDS, Kind
from watchdogd.model import Finding, PidfileRead


def hung_probe(
    subject: str,
    proven: bool = True,
    pids: Sequence[int] = (),
    age_s: float = 61.0,
    cause: Cause = Cause.UNKNOWN,
    since: float = 0.0,
) -> Finding:
    """A probe_hung finding about `subject`, proven libvirt's or not."""
    found = Diagnosis("before_ready", None, cause, "a test's probe")
    evidence = HungProbe(subject, age_s, tuple(pids), (), PidfileRead(None, "missing"), found, owner_uid=0)
    return Finding(Kind.PROBE_HUNG, FINDING_KINDS[Kind.PROBE_HUNG], subject, since, "m", evidence, proven)


def stale_dir(subject: str, since: float = 0.0) -> Finding:
    evidence = StaleDir(subject, 700.0, "1970-01-01T00:00:00Z", PidfileRead(None, "missing"), owner_uid=0)
    return Finding(Kind.PROBE_DIR_STALE, FINDING_KINDS[Kind.PROBE_DIR_STALE], subject, since, "stale", evidence)
