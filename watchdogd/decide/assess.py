"""Assess, pure: what an Observation means, as the contract's findings.

No I/O and no clock of its own: the same observation always gives the same findings,
so every rule here is tested directly and the daemon and `check` agree by design.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from ..config import Config
from ..diagnose.classify import classify
from ..diagnose.diagnostician import Insight
from ..durations import format_duration
from ..kinds import Kind
from ..model import Defunct, Finding, Grounds, Observation, Probe
from ..observe.capture import Capture
from ..thresholds import ProbeState, is_lasting_zombie, is_long_missing, probe_state
from ..timefmt import iso_utc
from . import evidence as ev
from . import grounds
from .libvirt_said import said


def assess(obs: Observation, config: Config, insight: Optional[Insight] = None) -> List[Finding]:
    """insight: what diagnosis added to this scan (why probes hung, logs, KVM); None: nothing beyond the observation."""
    findings: List[Finding] = []
    detect = config.detect
    seen = insight or Insight()
    for probe in obs.probes:
        state = probe_state(probe, detect)
        if state is ProbeState.HUNG:
            findings.append(_probe_hung(probe, obs, config, seen))
        elif state is ProbeState.STALE:
            findings.append(_probe_dir_stale(probe, obs))
    findings.extend(_probe_defunct(obs, config))
    findings.extend(_floods(obs, config))
    findings.extend(_missing_dirs(obs, config))
    findings.extend(said(obs, config, seen))
    return findings


def process_evidence(probe: Probe, obs: Observation) -> Tuple[ev.ProcessFact, ...]:
    return tuple(
        ev.ProcessFact(
            pid=m.process.pid,
            role=m.role.value,
            state=m.process.state,
            ppid=m.process.ppid,
            comm=m.process.comm,
            uid=m.process.uid,
            age_s=round(max(0.0, obs.uptime_s - m.process.start_boot_s), 1),
        )
        for m in probe.members
    )


def _roles_text(probe: Probe) -> str:
    return ", ".join(f"{m.role.value} {m.process.pid} ({m.process.state})" for m in probe.members)


def _probe_hung(probe: Probe, obs: Observation, config: Config, insight: Insight) -> Finding:
    stuck = [m.process.pid for m in probe.live_members if m.process.state == "D"]
    diagnosis = insight.diagnoses.get(probe.path) or classify(probe, Capture(probe.path, "", ()))
    message = (
        f"Capability probe {probe.path} has been hung for {format_duration(round(probe.age_s))} "
        f"(over {format_duration(config.detect.probe_hung_after)}): libvirt waits on it, and every "
        f"domcapabilities call and VM start waits behind it. Processes: {_roles_text(probe)}."
    )
    if stuck:
        message += f" In uninterruptible sleep (D), SIGKILL will not end: {', '.join(map(str, stuck))}."
    message += f" Why: {diagnosis.detail} ({diagnosis.cause}, {diagnosis.stage}). What to do: {diagnosis.what_to_do}"
    if insight.history:
        message += f" Kernel history: {insight.history}."
    if probe.held is not None:
        message += (
            f" Held, not hung: {probe.held}. It may be ended (its processes are uid {probe.owner_uid}'s own),"
            " but host-wide actions (cache quarantine, libvirt restart) will not act on it."
        )
    elif probe.proof is None:
        message += (
            " Not proven libvirt's (no member was seen as a child of a libvirt daemon; its processes run as uid "
            f"{probe.owner_uid}):"
            " it may be ended, but host-wide actions (cache quarantine, libvirt restart) will not act on it."
        )
    evidence = ev.HungProbe(
        probe_dir=probe.path,
        age_s=round(probe.age_s, 1),
        pids=tuple(probe.pids()),
        processes=process_evidence(probe, obs),
        pidfile=probe.pidfile,
        found=diagnosis,
        owner_uid=probe.owner_uid,
        proof=probe.proof,
        held=probe.held,  # held by its own uid or a debugger: never host-wide, never counted (docs/THREAT-MODEL.md)
        kernel_history=insight.history or None,
        pidfile_rejected=probe.pidfile_rejected or None,
        uninterruptible=tuple(stuck) or None,
    )
    on = grounds.of_probe(probe, config)
    if on is Grounds.LIBVIRTS:
        message += (
            f" Libvirt's, but it runs as uid {probe.owner_uid} (a qemu user), who can make its own probes hang:"
            " it is ended, and host-wide actions will not act on it (libvirt.qemu_probes_host_wide)."
        )
    return Finding.new(Kind.PROBE_HUNG, probe.path, obs.taken_wall - probe.age_s, message, evidence, on)


def _probe_dir_stale(probe: Probe, obs: Observation) -> Finding:
    message = (
        f"Probe dir {probe.path} is {format_duration(round(probe.age_s))} old and no process belongs to it: "
        "left behind by a probe that died (or a libvirt that was killed); safe to remove."
    )
    evidence = ev.StaleDir(
        probe_dir=probe.path,
        age_s=round(probe.age_s, 1),
        made=iso_utc(probe.made_wall),
        pidfile=probe.pidfile,
        owner_uid=probe.owner_uid,
        pidfile_rejected=probe.pidfile_rejected or None,
    )
    # never proven: a dir no process belongs to proves nothing, anyone who can write the base can make one
    return Finding.new(Kind.PROBE_DIR_STALE, probe.path, probe.made_wall, message, evidence)


def _probe_defunct(obs: Observation, config: Config) -> List[Finding]:
    """Zombies grouped by what holds them: a probe's first process, or libvirt itself."""
    groups: Dict[str, List[Defunct]] = {}
    by_path = {p.path: p for p in obs.probes}
    for d in obs.defunct:
        if not is_lasting_zombie(d, config.detect) or d.parent_kind not in ("probe", "libvirt"):
            continue  # a zombie for a moment is how every probe starts
        subject = d.probe_path if d.probe_path else f"libvirt pid {d.zombie.ppid}"
        groups.setdefault(subject, []).append(d)
    findings = []
    for subject, zombies in sorted(groups.items()):
        parents = sorted({d.zombie.ppid for d in zombies})
        if zombies[0].parent_kind == "probe":
            fix = "it goes away when the hung probe is ended"
        else:
            fix = "only libvirt can reap it: restart libvirt if it does not go away"
        message = (
            f"Zombie emulator process{'es' if len(zombies) > 1 else ''} "
            f"{', '.join(str(d.zombie.pid) for d in zombies)} "
            f"of {subject}, not reaped by parent {', '.join(map(str, parents))}; {fix}."
        )
        probe = by_path.get(zombies[0].probe_path or "")
        evidence = ev.Zombies(
            probe_dir=zombies[0].probe_path,
            pids=tuple(d.zombie.pid for d in zombies),
            zombies=tuple(
                ev.ZombieFact(
                    pid=d.zombie.pid,
                    parent_pid=d.zombie.ppid,
                    parent_comm=d.parent.comm if d.parent else None,
                    parent_kind=d.parent_kind,
                    age_s=round(d.age_s, 1),
                )
                for d in zombies
            ),
        )
        since = obs.taken_wall - max(d.age_s for d in zombies)
        on = grounds.of_zombies(probe, zombies, config)
        findings.append(Finding.new(Kind.PROBE_DEFUNCT, subject, since, message, evidence, on))
    return findings


def _floods(obs: Observation, config: Config) -> List[Finding]:
    out = []
    for flood in obs.floods:
        message = (
            f"Probe dir {flood.base} holds {flood.total} qmp-XXXXXX dirs, more than detect.max_dirs_per_base "
            f"({config.detect.max_dirs_per_base}): {flood.tracked} are tracked (every one a live emulator names among "
            "them), "
            f"{flood.total - flood.tracked} only counted. libvirt makes one at a time; this many is something (or "
            "someone) making "
            "dirs without end: find who owns them."
        )
        evidence = ev.Flood(base=flood.base, total=flood.total, tracked=flood.tracked)
        out.append(Finding.new(Kind.PROBE_DIRS_FLOOD, flood.base, obs.taken_wall, message, evidence))
    return out


def _missing_dirs(obs: Observation, config: Config) -> List[Finding]:
    out = []
    for missing in obs.missing_dirs:
        if not is_long_missing(missing, config.detect):
            continue
        message = (
            f"Probe dir {missing.path} has not existed for {format_duration(round(missing.missing_s))}: hung probes "
            "there cannot be seen. "
            "Either libvirt has not made it (not installed, not started yet, or a session libvirt that has not run), "
            "libvirt.probe_dirs names the wrong place, or it is hidden from the watchdog (the unit's ProtectHome=yes "
            "hides "
            "/home, /root and /run/user: add the path with a drop-in)."
        )
        evidence = ev.MissingDir(probe_dir=missing.path, missing_s=round(missing.missing_s, 1))
        out.append(
            Finding.new(Kind.PROBE_DIR_MISSING, missing.path, obs.taken_wall - missing.missing_s, message, evidence)
        )
    return out
