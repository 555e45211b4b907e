"""The thresholds, in one place: hung, stale, missing, a VM start failure's age, and when each is crossed next.

Assess finds by them, diagnosis and the act stage's re-checks call them, and the
daemon's loop wakes at the deadlines they give. Two knobs carry them all: probe_hung_after
(a process, or a zombie, has waited too long) and stale_dir_after (what libvirt left, or
stopped saying, is over: a dir with nobody in it, a probe dir gone, a failure with no news).
"""

from __future__ import annotations

import enum
from typing import List, Optional

from .config import DetectConfig
from .model import Defunct, MissingDir, Observation, Probe


class ProbeState(enum.Enum):
    """What a probe dir is now: the one classification assess finds by and the metrics count."""

    RUNNING = "running"  # its processes run, not hung yet: libvirt waits on it, as it should
    HUNG = "hung"  # its processes are older than probe_hung_after
    STALE = "stale"  # no live process, older than stale_dir_after
    LEFT = "left"  # no live process, not stale yet (a dir libvirt just finished with)


def probe_state(probe: Probe, detect: DetectConfig) -> ProbeState:
    if probe.live_members:
        return ProbeState.HUNG if is_hung(probe, detect) else ProbeState.RUNNING
    return ProbeState.STALE if why_not_stale(probe, detect) is None else ProbeState.LEFT


def is_hung(probe: Probe, detect: DetectConfig) -> bool:
    """A probe whose processes are older than detect.probe_hung_after."""
    return bool(probe.live_members) and probe.age_s >= detect.probe_hung_after


def is_starting(probe: Probe, detect: DetectConfig) -> bool:
    """A probe whose processes run and are not hung yet: libvirt is waiting on it, as it should."""
    return bool(probe.live_members) and probe.age_s < detect.probe_hung_after


def is_lasting_zombie(defunct: Defunct, detect: DetectConfig) -> bool:
    """A zombie older than probe_hung_after: one for a moment is how every probe starts (qemu's double fork)."""
    return defunct.age_s >= detect.probe_hung_after


def deadlines(obs: Observation, detect: DetectConfig, at: float) -> List[float]:
    """Monotonic times at which some probe (or zombie) crosses a threshold, given obs was taken at `at`.

    >>> from watchdogd.model import PidfileRead
    >>> obs = Observation(taken_wall=0, probes=(Probe("/d/qmp-aaaaaa", 0, 1.0, PidfileRead(None)),))
    >>> deadlines(obs, DetectConfig(), 100.0)
    [159.0, 699.0]
    """
    limits = (detect.probe_hung_after, detect.stale_dir_after)
    out = [at + limit - p.age_s for p in obs.probes for limit in limits if p.age_s < limit]
    out += [at + detect.probe_hung_after - d.age_s for d in obs.defunct if not is_lasting_zombie(d, detect)]
    return sorted(out)


def why_not_stale(probe: Probe, detect: DetectConfig) -> Optional[str]:
    """None when the dir is stale (no live process, none that may be its own unread, older than stale_dir_after),
    else why not (said in a skipped action)."""
    if probe.live_members:
        return f"no longer stale: pids {', '.join(map(str, probe.pids()))} belong to it"
    if probe.unread_pids:
        pids = ", ".join(map(str, probe.unread_pids))
        return f"not stale: pids {pids} may belong to it (their command lines could not be read)"
    if probe.age_s < detect.stale_dir_after:
        return "no longer stale: it is newer than detect.stale_dir_after"
    return None


def is_long_missing(missing: MissingDir, detect: DetectConfig) -> bool:
    """A configured probe dir gone for stale_dir_after: a libvirt between runs (a session one, a restart) is not
    told of, a dir that never comes back is."""
    return missing.missing_s >= detect.stale_dir_after


def vm_failure_kept_for(detect: DetectConfig) -> float:
    """How long a VM start failure with no news stays open: stale_dir_after, after which what libvirt said is
    over (a domain nobody tried again since)."""
    return detect.stale_dir_after
