"""The hung and stale rules, in one place: assess finds by them, diagnosis and the act stage's re-checks call them."""

from __future__ import annotations

from typing import Optional

from .config import DetectConfig
from .model import Probe


def is_hung(probe: Probe, detect: DetectConfig) -> bool:
    """A probe whose processes are older than detect.probe_hung_after."""
    return bool(probe.live_members) and probe.age_s >= detect.probe_hung_after


def why_not_stale(probe: Probe, detect: DetectConfig) -> Optional[str]:
    """None when the dir is stale (no live process, older than stale_dir_after), else why not (said in a skipped action)."""
    if probe.live_members:
        return f"no longer stale: pids {', '.join(map(str, probe.pids()))} belong to it"
    if probe.age_s < detect.stale_dir_after:
        return "no longer stale: it is newer than detect.stale_dir_after"
    return None
