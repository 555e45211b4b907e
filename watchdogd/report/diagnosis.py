"""`kvm-watchdog diagnose`: one report a person can read at 3 a.m., and its verdict.

The report's parts (JSON keys): kvm (the self-test: usable, api_version, checks),
kernel (running, last good, per-release history, and `said`: its own lines of this boot that a
kernel signature names), probes (open probes with their
diagnosis), signatures (recent start-up failure lines in the domains' logs),
incidents (the newest bundles), verdict (cause, what_to_do as ordered steps). Its text: report.text.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

from ..causes import Cause
from .answer import ExitStatus


def verdict(
    kvm: Dict[str, Any],
    probes: Sequence[Dict[str, Any]],
    signatures: Sequence[Dict[str, Any]],
    errors: Sequence[str],
    kernel_said: Sequence[Dict[str, Any]] = (),
) -> Dict[str, Any]:
    """The most serious cause found, and the steps in order (the fix first, then what to look at); the kernel's own
    lines that a signature names are cited where they bear on it."""
    steps: List[str] = []
    cited = [f"the kernel said at boot: {k['line'].strip()!r} ({k['cause']}): {k['what_to_do']}" for k in kernel_said]
    if not kvm.get("usable", False):
        steps.append(f"KVM is unusable: {kvm.get('problem')}")
        steps += cited
        steps += [
            "load the KVM module (kvm-intel / kvm-amd) and check virtualization in the firmware",
            "after a kernel upgrade: boot the last good kernel",
        ]
        return {"cause": Cause.KVM_UNUSABLE, "what_to_do": steps}
    for p in probes:
        d = p.get("diagnosis") or {}
        if d.get("cause"):
            steps.append(f"probe {p.get('probe_dir')}: {d.get('what_to_do')}")
    if probes:
        cause = (probes[0].get("diagnosis") or {}).get("cause", Cause.UNKNOWN)
        steps.append(
            "`kvm-watchdog remediate` (or the running daemon) ends hung probes; `journalctl KVMWD_EVENT=probe_hung "
            "-x` for the history"
        )
        return {"cause": cause, "what_to_do": steps}
    alerting = [s for s in signatures if s.get("alert")]
    if alerting:
        s = alerting[0]
        return {
            "cause": s["cause"],
            "what_to_do": [f"domain {s['domain']}: {s['what_to_do']}"] + [a for a in kvm.get("advice", [])] + cited,
        }
    if errors:
        return {"cause": Cause.UNKNOWN, "what_to_do": [f"could not see everything: {e}" for e in errors]}
    return {"cause": Cause.HEALTHY, "what_to_do": list(kvm.get("advice", [])) + cited}


def exit_status(report: Dict[str, Any]) -> ExitStatus:
    cause = report["verdict"]["cause"]
    if cause == Cause.HEALTHY:
        return ExitStatus.OK
    if cause == Cause.UNKNOWN and not report["probes"]:
        return ExitStatus.UNKNOWN
    return ExitStatus.CRITICAL  # KVM unusable, or a cause found
