"""What libvirt, the kernel and the guests' logs said, as findings: libvirt's answer to getDomainCapabilities,
its capabilities cache, its journal's probe failures, the KVM self-test, the domains' QEMU logs, a kernel change."""

from __future__ import annotations

from typing import List

from ..config import Config
from ..diagnose.diagnostician import Insight
from ..diagnose.kvmtest import KvmResult
from ..durations import format_duration
from ..kinds import Kind
from ..model import Finding, Observation
from ..thresholds import is_starting
from ..timefmt import iso_utc
from . import evidence as ev
from . import grounds


def said(obs: Observation, config: Config, insight: Insight) -> List[Finding]:
    findings = [*_latency(obs, config), *_cache(obs, config), *_vm_start_failed(obs, insight)]
    findings.extend(_probe_failed(obs, config, insight))
    if insight.kvm is not None and not insight.kvm.usable:
        findings.append(_kvm_unusable(obs, insight.kvm))
    return findings + _kernel_changed(obs)


def _vm_start_failed(obs: Observation, insight: Insight) -> List[Finding]:
    out = []
    for f in insight.vm_failures:
        seen = next((line.strip() for line in f.lines if line.strip()), "")
        message = (
            f"Domain {f.domain} failed to start: its QEMU log ({f.log}) shows {f.cause} ({seen!r}). "
            f"What to do: {f.what_to_do}"
        )
        # never proven: the lines are QEMU's stderr, and the qemu user writes them
        evidence = ev.VmStart(
            domain=f.domain, log=f.log, lines=tuple(f.lines), found=ev.Explained(f.cause, f.what_to_do)
        )
        out.append(Finding.new(Kind.VM_START_FAILED, f.domain, f.since, message, evidence))
    return out


def _probe_failed(obs: Observation, config: Config, insight: Insight) -> List[Finding]:
    out = []
    for e in insight.probe_failures:
        f = e.failure
        message = (
            f"libvirt could not probe {f.binary}: its journal says {f.message!r}. No VM that uses this emulator can "
            f"be defined or started until a probe of it works ({e.cause}). What to do: {e.what_to_do}"
        )
        evidence = ev.FailedProbe(
            f.binary, f.message, f.qemu_said, iso_utc(f.when), f.pid, found=ev.Explained(e.cause, e.what_to_do)
        )
        on = grounds.of_libvirt_call(Kind.PROBE_FAILED, obs, config)
        out.append(Finding.new(Kind.PROBE_FAILED, f.binary, f.when, message, evidence, on))
    return out


def _kvm_unusable(obs: Observation, kvm: KvmResult) -> Finding:
    message = (
        f"KVM is unusable on this host: {kvm.problem}. "
        "No VM can start with KVM acceleration; run `kvm-watchdog diagnose`."
    )
    return Finding.new(Kind.KVM_UNUSABLE, "/dev/kvm", obs.taken_wall, message, ev.KvmUnusable(kvm))


def _latency(obs: Observation, config: Config) -> List[Finding]:
    lat = obs.latency
    if lat is None or lat.skipped:
        return []
    uri = config.libvirt.uri
    timeout = config.latency.timeout
    if lat.answered and lat.domcaps_ms is not None:
        if lat.domcaps_ms >= config.latency.slow * 1000:
            evidence = ev.Latency(uri, latency_ms=round(lat.domcaps_ms, 1), slow_ms=config.latency.slow * 1000)
            return [
                Finding.new(
                    Kind.DOMCAPS_SLOW,
                    uri,
                    obs.taken_wall,
                    f"getDomainCapabilities on {uri} took {lat.domcaps_ms / 1000:.1f}s (slow is "
                    f"{format_duration(config.latency.slow)}): "
                    "libvirt is probing or busy; VM starts are delayed.",
                    evidence,
                    grounds.of_libvirt_call(Kind.DOMCAPS_SLOW, obs, config),
                )
            ]
        return []
    if lat.timed_out and lat.reachable:
        evidence = ev.Latency(uri, latency_ms=round(timeout * 1000, 1), timeout_s=timeout)
        return [
            Finding.new(
                Kind.DOMCAPS_HUNG,
                uri,
                obs.taken_wall,
                f"getDomainCapabilities on {uri} did not answer within {format_duration(timeout)}: libvirt answers, "
                "but "
                "its capabilities are stuck (usually behind a hung probe); VMs cannot be started or defined.",
                evidence,
                grounds.of_libvirt_call(Kind.DOMCAPS_HUNG, obs, config),
            )
        ]
    if lat.reachable is False or (lat.timed_out and lat.reachable is None):
        why = lat.error or f"no answer to getLibVersion within {format_duration(timeout)}"
        return [
            Finding.new(
                Kind.LIBVIRT_UNREACHABLE,
                uri,
                obs.taken_wall,
                f"libvirt at {uri} cannot be reached: {why}.",
                ev.Latency(uri, error=why),
            )
        ]
    if lat.reachable and lat.error:
        evidence = ev.Latency(
            uri, latency_ms=round(lat.domcaps_ms, 1) if lat.domcaps_ms is not None else None, error=lat.error
        )
        return [
            Finding.new(
                Kind.DOMCAPS_FAILED,
                uri,
                obs.taken_wall,
                f"getDomainCapabilities on {uri} failed: {lat.error}. VMs cannot be started until capabilities can be "
                "probed.",
                evidence,
                grounds.of_libvirt_call(Kind.DOMCAPS_FAILED, obs, config),
            )
        ]
    return []


def _cache(obs: Observation, config: Config) -> List[Finding]:
    if obs.cache_entries is None or obs.cache_entries:
        return []
    lat = obs.latency
    libvirt_up = lat.reachable if lat is not None and not lat.skipped else bool(obs.libvirt_pids)
    if not libvirt_up:
        return []
    if any(is_starting(p, config.detect) for p in obs.probes):
        return []  # a probe is running and not hung yet: the cache is expected to be empty until it finishes
    return [
        Finding.new(
            Kind.CACHE_EMPTY,
            obs.cache_dir,
            obs.taken_wall,
            f"libvirt is up but its capabilities cache {obs.cache_dir} holds no entry: no probe has finished since the "
            "cache was last invalidated (a new kernel, emulator or libvirt), so nothing can start a VM yet.",
            ev.EmptyCache(cache_dir=obs.cache_dir, entries=0, owner_uid=obs.cache_owner_uid),
            grounds.of_cache(obs, config),
        )
    ]


def _kernel_changed(obs: Observation) -> List[Finding]:
    if not obs.kernel_last_good or obs.kernel_last_good == obs.kernel_release:
        return []
    return [
        Finding.new(
            Kind.KERNEL_CHANGED,
            obs.kernel_release,
            obs.taken_wall,
            f"The running kernel {obs.kernel_release} differs from {obs.kernel_last_good}, the last one on which "
            "capability probing worked: libvirt re-probes every emulator now, which is when a broken kernel hangs "
            "probes.",
            ev.KernelChanged(release=obs.kernel_release, last_good=obs.kernel_last_good),
        )
    ]
