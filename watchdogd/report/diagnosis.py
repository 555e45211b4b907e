"""`kvm-watchdog diagnose`: one report a person can read at 3 a.m., and its verdict.

The report's parts (JSON keys): kvm (the self-test: usable, api_version, checks),
kernel (running, last good, per-release history, and `said`: its own lines of this boot that a
kernel signature names), probes (open probes with their
diagnosis), signatures (recent start-up failure lines in the domains' logs),
incidents (the newest bundles), verdict (cause, what_to_do as ordered steps). Its text: report.text.
The composition root gathers what it rests on (service/app.diagnose_host); what it says is decided here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..causes import Cause
from ..decide.evidence import HungProbe
from ..diagnose import signatures
from ..diagnose.kvmtest import KvmResult
from ..diagnose.signatures import Signature
from ..model import Finding, Observation
from .answer import ExitStatus

DOMAIN_LINES_SHOWN = 10  # the newest matches of each domain's log


@dataclass(frozen=True)
class ProbeSeen:
    """A hung probe, as diagnose tells it."""

    probe_dir: str
    age_s: float
    pids: Tuple[int, ...]
    diagnosis: Optional[Dict[str, object]]
    proven_libvirt: bool
    kernel_history: Optional[str]

    @property
    def cause(self) -> Union[Cause, str]:
        found = (self.diagnosis or {}).get("cause")
        return found if isinstance(found, str) else Cause.UNKNOWN

    def to_json(self) -> Dict[str, Any]:
        return {
            "probe_dir": self.probe_dir,
            "age_s": self.age_s,
            "pids": list(self.pids),
            "diagnosis": self.diagnosis,
            "proven_libvirt": self.proven_libvirt,
            "kernel_history": self.kernel_history,
        }


@dataclass(frozen=True)
class Said:
    """A line a signature names: a domain's QEMU log line (domain set) or the kernel's own."""

    line: str
    cause: str
    what_to_do: str
    domain: Optional[str] = None
    alert: bool = True

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"line": self.line, "cause": self.cause, "what_to_do": self.what_to_do}
        if self.domain is not None:
            out = {"domain": self.domain, "cause": self.cause, "alert": self.alert, **out}
        return out


@dataclass(frozen=True)
class Verdict:
    cause: Union[Cause, str]  # a Cause, or the cause a signature table names
    what_to_do: Tuple[str, ...]  # the fix first, then what to look at

    def to_json(self) -> Dict[str, Any]:
        return {"cause": self.cause, "what_to_do": list(self.what_to_do)}


@dataclass(frozen=True)
class DiagnoseReport:
    kvm: KvmResult
    kernel_release: str
    kernel_last_good: Optional[str]
    kernel_history: Dict[str, Any]
    kernel_said: Tuple[Said, ...]
    probes: Tuple[ProbeSeen, ...]
    signatures: Tuple[Said, ...]
    incidents: Tuple[Dict[str, Any], ...]  # the bundles' summaries, as read back from the state dir
    errors: Tuple[str, ...]

    @property
    def verdict(self) -> Verdict:
        """The most serious cause found, and the steps in order; the kernel's own lines that a signature names are
        cited where they bear on it."""
        cited = [f"the kernel said at boot: {k.line.strip()!r} ({k.cause}): {k.what_to_do}" for k in self.kernel_said]
        if not self.kvm.usable:
            steps = [f"KVM is unusable: {self.kvm.problem}", *cited]
            steps += [
                "load the KVM module (kvm-intel / kvm-amd) and check virtualization in the firmware",
                "after a kernel upgrade: boot the last good kernel",
            ]
            return Verdict(Cause.KVM_UNUSABLE, tuple(steps))
        if self.probes:
            steps = [
                f"probe {p.probe_dir}: {(p.diagnosis or {}).get('what_to_do')}" for p in self.probes if p.diagnosis
            ]
            steps.append(
                "`kvm-watchdog remediate` (or the running daemon) ends hung probes; `journalctl KVMWD_EVENT=probe_hung "
                "-x` for the history"
            )
            return Verdict(self.probes[0].cause, tuple(steps))
        alerting = [s for s in self.signatures if s.alert]
        if alerting:
            s = alerting[0]
            return Verdict(s.cause, (f"domain {s.domain}: {s.what_to_do}", *self.kvm.advice, *cited))
        if self.errors:
            return Verdict(Cause.UNKNOWN, tuple(f"could not see everything: {e}" for e in self.errors))
        return Verdict(Cause.HEALTHY, (*self.kvm.advice, *cited))

    @property
    def exit_status(self) -> ExitStatus:
        cause = self.verdict.cause
        if cause == Cause.HEALTHY:
            return ExitStatus.OK
        if cause == Cause.UNKNOWN and not self.probes:
            return ExitStatus.UNKNOWN
        return ExitStatus.CRITICAL  # KVM unusable, or a cause found

    def to_json(self) -> Dict[str, Any]:
        return {
            "kvm": self.kvm.to_json(),
            "kernel": {
                "release": self.kernel_release,
                "last_good": self.kernel_last_good,
                "history": self.kernel_history,
                "said": [k.to_json() for k in self.kernel_said],
            },
            "probes": [p.to_json() for p in self.probes],
            "signatures": [s.to_json() for s in self.signatures],
            "incidents": list(self.incidents),
            "errors": list(self.errors),
            "verdict": self.verdict.to_json(),
        }


INCIDENT_KEYS = ("file", "probe_dir", "taken", "diagnosis", "kernel", "emulator", "packages")


@dataclass(frozen=True)
class Tables:
    domain: Sequence[Signature]  # QEMU's words in the domains' logs
    kernel: Sequence[Signature]  # the kernel's own lines


def report(
    kvm: KvmResult,
    seen: Tuple[Observation, Sequence[Finding]],
    domain_lines: Mapping[str, Sequence[str]],
    kernel_lines: Sequence[str],
    tables: Tables,
    recorded: Tuple[Dict[str, Any], Sequence[Mapping[str, Any]]],
    errors: Sequence[str],
) -> DiagnoseReport:
    """What diagnose saw, as its report. seen: a read-only scan's observation and findings; recorded: the kernel
    history (as JSON) and the newest incident bundles."""
    obs, findings = seen
    history, bundles = recorded
    probes = [
        ProbeSeen(
            f.subject, f.evidence.age_s, f.evidence.pids, f.evidence.diagnosis(), f.proven, f.evidence.kernel_history
        )
        for f in findings
        if isinstance(f.evidence, HungProbe)
    ]
    logs: List[Said] = []
    for domain, lines in sorted(domain_lines.items()):
        for m in signatures.match(lines, tables.domain)[-DOMAIN_LINES_SHOWN:]:
            sig = m.signature
            logs.append(Said(m.line, sig.cause, sig.what_to_do, domain=domain, alert=sig.alert))
    said = [
        Said(m.line, m.signature.cause, m.signature.what_to_do) for m in signatures.match(kernel_lines, tables.kernel)
    ]
    return DiagnoseReport(
        kvm=kvm,
        kernel_release=obs.kernel_release,
        kernel_last_good=obs.kernel_last_good,
        kernel_history=history,
        kernel_said=tuple(said),
        probes=tuple(probes),
        signatures=tuple(logs),
        incidents=tuple({k: b.get(k) for k in INCIDENT_KEYS} for b in bundles),
        errors=tuple(errors),
    )
