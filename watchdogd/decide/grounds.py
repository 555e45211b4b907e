"""The rule, in one place: what each finding rests on, and so what it may drive (docs/THREAT-MODEL.md).

What a process of an untrusted uid does can only ever get that process ended. A probe that
libvirt runs as the qemu user is libvirt's, but that user can make it hang or fail at will
(a FIFO at its pidfile, its monitor held, ptrace, a signal): it is evidence for ending it,
never for a host-wide action. Host-wide actions need evidence from below that uid: libvirt
stuck where none of that user's probes explains it, the kernel, root's own cache, or a probe
libvirt runs as itself (root, as on the incident's hosts; a session libvirt's user).
"""

from __future__ import annotations

from typing import Optional, Sequence

from ..config import Config
from ..kinds import Kind
from ..model import Defunct, Grounds, Observation, Probe


def _as_libvirt(probe_as_libvirt: bool, config: Config) -> Grounds:
    """Libvirt's evidence: from below the qemu user when libvirt runs its probes as itself (or the operator widened)."""
    return Grounds.HOST if probe_as_libvirt or config.libvirt.qemu_probes_host_wide else Grounds.LIBVIRTS


def of_probe(probe: Probe, config: Config) -> Grounds:
    """A hung probe: forgeable unless proven libvirt's and held by nobody; host-grade only if it runs as libvirt."""
    if probe.proof is None or probe.held is not None:
        return Grounds.FORGEABLE
    return _as_libvirt(probe.as_libvirt, config)


def of_zombies(probe: Optional[Probe], zombies: Sequence[Defunct], config: Config) -> Grounds:
    """Zombies of a probe: as the probe. Zombies of libvirt itself: libvirt's, as the uid they ran as."""
    if probe is not None:
        return of_probe(probe, config)
    if not all(d.parent_kind == "libvirt" and d.parent is not None and d.parent.uid == 0 for d in zombies):
        return Grounds.FORGEABLE
    return _as_libvirt(all(d.zombie.uid == 0 for d in zombies), config)


def of_libvirt_call(kind: str, obs: Observation, config: Config) -> Grounds:
    """getDomainCapabilities slow, hung or failed, or libvirt's probe failed: its own word, but the qemu user's doing
    where probes run as that user.

    A hung or slow call is explained by a probe of libvirt's that runs as that user and is in flight:
    libvirt waits on it. A failed call, by a probe of that user's that it ended itself (gone by the
    time libvirt answers): never host-grade where libvirt's probes run as that user.
    """
    if obs.probes_as_libvirt or config.libvirt.qemu_probes_host_wide:
        return Grounds.HOST
    if kind in (Kind.DOMCAPS_FAILED, Kind.PROBE_FAILED):
        return Grounds.LIBVIRTS
    explained = any(p.proof is not None and p.live_members and not p.as_libvirt for p in obs.probes)
    return Grounds.LIBVIRTS if explained else Grounds.HOST


def of_cache(obs: Observation, config: Config) -> Grounds:
    """An empty cache: forgeable unless root's; and the qemu user keeps it empty by hanging its own probes."""
    if obs.cache_owner_uid != 0:
        return Grounds.FORGEABLE
    return _as_libvirt(obs.probes_as_libvirt, config)
