#!/usr/bin/env python3
"""Generate kvm-watchdog(8) and kvm-watchdog.yaml(5) from their one source: the code and the shipped config.

The commands and options come from the CLI's own argparse parser, the event types
and MESSAGE_IDs from watchdogd.report.events, the config keys from config/kvm-watchdog.yaml
(every key commented). So the pages cannot drift from what the program does.
Both packages (.deb and .rpm) run this at build time.

Usage: make-man.py OUTDIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from watchdogd import __version__  # noqa: E402
from watchdogd.kinds import FINDING_KINDS  # noqa: E402
from watchdogd.report.events import MESSAGE_IDS  # noqa: E402
from watchdogd.service.cli import _parser  # noqa: E402

DATE = "2026-11-24"


def esc(text: str) -> str:
    """Roff-safe text: backslashes escaped, no line starting with a control character."""
    out = []
    for line in text.replace("\\", "\\e").replace("-", "\\-").splitlines():
        out.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(out)


def commands() -> List[str]:
    parser = _parser()
    lines = []
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    for name, cmd in sub.choices.items():
        lines += [".TP", f".B {name}", esc(helps.get(name) or "")]
        nested = [a for a in cmd._actions if isinstance(a, argparse._SubParsersAction)]
        for group in nested:
            inner_helps = {c.dest: c.help for c in group._choices_actions}
            for inner in group.choices:
                lines += [".RS", ".TP", f".B {name} {inner}", esc(inner_helps.get(inner) or ""), ".RE"]
        for action in cmd._actions:
            if action.option_strings and action.dest != "help":
                lines += [".RS", ".TP", f".B {esc(', '.join(action.option_strings))}", esc(action.help or ""), ".RE"]
    return lines


def page8() -> str:
    lines = [
        f'.TH KVM\\-WATCHDOG 8 "{DATE}" "kvm-watchdog {__version__}" "System Administration"',
        ".SH NAME",
        "kvm\\-watchdog \\- find and fix hung libvirt QEMU capability probes",
        ".SH SYNOPSIS",
        ".B kvm\\-watchdog",
        "[\\fB\\-c\\fR \\fIFILE\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        esc(
            "After a kernel upgrade, libvirt's QEMU capability probe (qemu -machine none ... -daemonize) can hang; "
            "virsh domcapabilities and every VM start wait behind it, and the capabilities cache stays empty. "
            "kvm-watchdog watches the probe dirs (qmp-XXXXXX), their processes and zombies, and the latency of "
            "getDomainCapabilities; decides from its policies what to do (kill a hung probe safely, remove stale probe "
            "dirs, quarantine the cache, restart libvirt, or only alert); and reports each finding and action as a "
            "journal event, once when it opens and once when it resolves."
        ),
        ".SH OPTIONS",
        ".TP",
        ".B \\-c, \\-\\-config \\fIFILE\\fR",
        esc(
            "The config file. Default: $KVM_WATCHDOG_CONFIG, else /etc/kvm-watchdog/config.yaml (see "
            "kvm-watchdog.yaml(5))."
        ),
        ".TP",
        ".B \\-\\-version",
        "Print the version.",
        ".SH COMMANDS",
        *commands(),
        ".SH EXIT STATUS",
        esc(
            "check and remediate follow the monitoring-plugin convention: 0 no finding, 1 warning, 2 critical, 3 "
            "unknown. "
        ),
        esc(
            "run: 0 on a clean stop, 2 on a config error at start. status: 0, or 3 when no daemon state exists. "
            "config check: 0 valid, 2 invalid."
        ),
        ".SH SIGNALS",
        ".TP",
        ".B SIGHUP",
        esc(
            "Reload the config (systemctl reload kvm-watchdog). A broken new config is reported (config_error) and "
            "the running one kept."
        ),
        ".TP",
        ".B SIGTERM, SIGINT",
        esc("Stop cleanly within 5 seconds; no child process is left behind."),
        ".SH FINDINGS",
    ]
    for kind, severity in FINDING_KINDS.items():
        lines += [".TP", f".B {esc(kind)}", f"default severity {severity.label}"]
    lines += [
        ".SH JOURNAL EVENTS",
        esc(
            "Every event has SYSLOG_IDENTIFIER=kvm-watchdog, MESSAGE, PRIORITY, MESSAGE_ID and KVMWD_EVENT; where "
            "they apply "
            "KVMWD_STATE (open/resolved), KVMWD_PROBE_DIR, KVMWD_PIDS, KVMWD_AGE_S, KVMWD_LATENCY_MS, KVMWD_ACTION, "
            "KVMWD_POLICY, KVMWD_RESULT (ok/failed/skipped/dry_run), KVMWD_DRY_RUN and KVMWD_EVIDENCE (JSON). "
            "journalctl -x explains each MESSAGE_ID (catalog in /usr/lib/systemd/catalog/kvm-watchdog.catalog)."
        ),
    ]
    for event, mid in MESSAGE_IDS.items():
        lines += [".TP", f".B KVMWD_EVENT={esc(event)}", f"MESSAGE_ID={mid}"]
    lines += [
        ".SH METRICS",
        esc(
            "With metrics.textfile (node_exporter's textfile collector) or metrics.listen (an HTTP /metrics "
            "endpoint), the kvmwd_ "
            "series; counters survive restarts (state_dir/metrics.json). Rules: "
            "/usr/share/kvm-watchdog/kvm-watchdog-rules.yml; "
            "a Grafana dashboard: /usr/share/kvm-watchdog/kvm-watchdog-fleet.json."
        ),
    ]
    lines += [".SH ALERTS", esc("The shipped Prometheus rules; each alert's runbook_url points here.")]
    rules = yaml.safe_load((REPO / "packaging" / "prometheus" / "kvm-watchdog-rules.yml").read_text())
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        text = " ".join(str(rule["annotations"]["description"]).split())
        lines += [".TP", f".B {esc(rule['alert'])}", esc(f"({rule['labels']['severity']}) {text}")]
    lines += [
        ".SH EXAMPLES",
        ".nf",
        esc(
            "journalctl -u kvm-watchdog -p warning\n"
            "journalctl KVMWD_EVENT=probe_hung -o json\n"
            "journalctl -x -u kvm-watchdog\n"
            "kvm-watchdog check --json\n"
            "kvm-watchdog status"
        ),
        ".fi",
        ".SH FILES",
        ".TP",
        ".I /etc/kvm-watchdog/config.yaml",
        "The config (kvm\\-watchdog.yaml(5)).",
        ".TP",
        ".I /var/lib/kvm-watchdog/",
        esc(
            "State: status.json and scan.json (what status shows), policy.json, kernel.json, metrics.json (counters), "
            "quarantine/<UTC time>/ (moved capability caches)."
        ),
        ".SH SEE ALSO",
        "kvm\\-watchdog.yaml(5), systemctl(1), journalctl(1), virsh(1), libvirtd(8)",
    ]
    return "\n".join(lines) + "\n"


def page5() -> str:
    shipped = (REPO / "config" / "kvm-watchdog.yaml").read_text()
    lines = [
        f'.TH KVM\\-WATCHDOG.YAML 5 "{DATE}" "kvm-watchdog {__version__}" "File Formats"',
        ".SH NAME",
        "kvm\\-watchdog.yaml \\- the configuration of kvm\\-watchdog(8)",
        ".SH DESCRIPTION",
        esc(
            "A YAML file, /etc/kvm-watchdog/config.yaml by default. Every key is optional. Unknown keys are errors, "
            "not "
            "warnings: a typo in a policy must not silently turn remediation off. Durations are written 30s, 5m, 1h, "
            "250ms, 1h30m or as plain seconds. Check a file with kvm-watchdog config check FILE: each problem is "
            "printed "
            "as FILE:LINE: where: what is wrong. kvm-watchdog config show prints the effective config."
        ),
        ".SH THE SHIPPED FILE",
        esc("Every key with its default and what it means:"),
        ".PP",
        ".nf",
        ".ft CR",
        esc(shipped),
        ".ft R",
        ".fi",
        ".SH SEE ALSO",
        "kvm\\-watchdog(8)",
    ]
    return "\n".join(lines) + "\n"


def main(argv: List[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write(__doc__ or "")
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    (out / "kvm-watchdog.8").write_text(page8())
    (out / "kvm-watchdog.yaml.5").write_text(page5())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
