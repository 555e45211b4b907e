"""Every text an operator reads: `check` and `remediate`, systemd's STATUS= line, `status`, `diagnose`.

One renderer, so a finding, an action and a problem read the same wherever they show:
`SEVERITY kind: message`, `action [policy] subject: result (detail)`, `problem: ...`.
The JSON forms and the exit statuses are elsewhere (render, status, diagnosis); this
module only turns what they hold into lines.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..decide.condition import Condition
from ..durations import format_duration
from ..model import Finding, Observation
from .answer import worst_first
from .diagnosis import DiagnoseReport
from .status import StatusDocument


def plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def finding_line(severity: str, kind: str, message: object) -> str:
    return f"{severity.upper()} {kind}: {message}"


def action_line(a: Mapping[str, Any]) -> str:
    detail = f" ({a.get('detail')})" if a.get("detail") else ""
    return f"{a.get('action')} [{a.get('policy')}] {a.get('subject')}: {a.get('result')}{detail}"


def problem_line(problem: object, word: str = "problem:") -> str:
    return f"{word} {problem}"


# ---- check and remediate ------------------------------------------------------------------
def human(findings: Sequence[Finding], actions: Sequence[Dict[str, Any]], obs: Observation) -> str:
    """One line per finding, action and error, worst first; a summary when all is well."""
    lines = [finding_line(f.severity.label, f.kind, f.message) for f in worst_first(findings)]
    lines += ["ACTION " + action_line(a) for a in actions]
    lines += [problem_line(e, "UNKNOWN") for e in obs.errors]  # the monitoring plugins' word
    return "\n".join(lines or ["OK: " + summary(obs)])


def summary(obs: Observation) -> str:
    """A one-line picture of the host, for `check` and the daemon's STATUS=."""
    parts = [plural(len(obs.probes), "probe dir", "probe dirs")]
    lat = obs.latency
    if lat is not None:
        if lat.skipped:
            parts.append(f"latency probe skipped: {lat.skipped}")
        elif lat.answered and lat.domcaps_ms is not None:
            parts.append(f"domcapabilities in {lat.domcaps_ms:.0f} ms")
        elif lat.timed_out:
            parts.append("domcapabilities timed out")
        else:
            parts.append("libvirt did not answer")
    if obs.cache_entries is not None:
        parts.append(plural(len(obs.cache_entries), "cache entry", "cache entries"))
    return ", ".join(parts)


# ---- the daemon's STATUS= -------------------------------------------------------------------
def status_line(
    findings: Sequence[Finding], obs: Observation, paused: bool, condition: Optional[Condition] = None
) -> str:
    """One line for systemd's STATUS= (`systemctl status` shows it): the worst first, and whether VM starts are
    blocked."""
    parts = [
        f"{f.severity.label.upper()} {f.kind} {os.path.basename(f.subject) or f.subject}" for f in worst_first(findings)
    ]
    head = "; ".join(parts[:3]) + (f" (+{len(parts) - 3} more)" if len(parts) > 3 else "") if parts else "OK"
    tail = summary(obs)
    if obs.errors:
        tail += f", {plural(len(obs.errors), 'problem', 'problems')} reading the host"
    if paused:
        tail += ", remediation paused"
    blocked = " | VM STARTS BLOCKED" if condition is not None and condition.blocked else ""
    return f"{head}{blocked} | {tail}"


# ---- kvm-watchdog status --------------------------------------------------------------------
def status_text(status: StatusDocument, now: float) -> str:
    """The human form of `kvm-watchdog status`."""
    last = status.last_scan
    age = f" ({format_duration(max(0, round(now - last)))} ago)" if last is not None else ""
    state = "running" if status.running else "NOT running"
    lines = [
        f"kvm-watchdog {status.version}, pid {status.pid}: {state}; last scan {status.last_scan_utc}{age}",
        f"status: {status.status_line}",
        "remediation: " + ("PAUSED (the limits were reached)" if status.paused else "active"),
    ]
    lines.append(f"open findings: {len(status.open)}")
    for f in status.open:
        what = finding_line(str(f.get("severity", "")), f"{f.get('kind')} since {f.get('since')}", f.get("message"))
        lines.append("  " + what)
    lines.append(f"recent actions: {len(status.recent_actions)}")
    lines += [f"  {a.get('at_utc')} {action_line(a)}" for a in status.recent_actions[-10:]]
    lines += [problem_line(e) for e in status.errors]
    return "\n".join(lines)


# ---- kvm-watchdog diagnose ------------------------------------------------------------------
def diagnosis_text(diagnosed: DiagnoseReport) -> str:
    """The 3 a.m. report: the verdict and its steps first, then what it rests on."""
    report = diagnosed.to_json()
    kvm, kernel = report["kvm"], report["kernel"]
    lines = [f"VERDICT: {report['verdict']['cause']}"]
    lines += [f"  {n}. {step}" for n, step in enumerate(report["verdict"]["what_to_do"], 1)]
    lines.append("")
    state = "usable" if kvm.get("usable") else f"UNUSABLE ({kvm.get('problem')})"
    lines.append(f"KVM: {state}; API version {kvm.get('api_version')}")
    for c in kvm.get("checks", []):
        failed = "" if c.get("ok") else f": {c.get('error')} ({c.get('errno')})"
        lines.append(f"  {'ok ' if c.get('ok') else 'FAIL'} {c.get('name')}{failed}")
    lines += [f"  note: {advice}" for advice in kvm.get("advice", [])]
    lines.append(f"kernel: {kernel['release']} (last good: {kernel.get('last_good') or 'not known yet'})")
    for release, r in sorted(kernel.get("history", {}).items()):
        lines.append(f"  {release}: {int(r['ok'])} probes worked, {int(r['hung'])} hung")
    lines += [f"  the kernel said: {k['line'].strip()} ({k['cause']})" for k in kernel.get("said", [])]
    lines += _probes_and_logs(report)
    lines += [problem_line(e) for e in report.get("errors", [])]
    return "\n".join(lines)


def _probes_and_logs(report: Dict[str, Any]) -> List[str]:
    lines = [f"probes hung now: {len(report['probes'])}"]
    for p in report["probes"]:
        d = p.get("diagnosis") or {}
        why = f"{d.get('cause')}, {d.get('stage')}, blocked in {d.get('blocked_in')}: {d.get('detail')}"
        lines.append(f"  {p['probe_dir']} ({p.get('age_s')} s): {why}")
        if d.get("kernel_said"):
            lines.append(f"    the kernel said: {d['kernel_said']}")
    lines.append(f"start-up failure signatures in the domains' logs: {len(report['signatures'])}")
    for s in report["signatures"]:
        lines.append(f"  {s['domain']}: {s['cause']}{'' if s.get('alert') else ' (noted only)'}: {s['line'].strip()}")
    lines.append(f"incidents kept: {len(report['incidents'])}")
    for i in report["incidents"]:
        lines.append(f"  {i.get('file')}: {(i.get('diagnosis') or {}).get('cause')} on {i.get('kernel')}")
    return lines
