"""Fleet: the metrics a fleet's Prometheus reads, proven against the real node_exporter and the real Prometheus.

One dashboard sees every hypervisor: a replayed hang in the sandboxed libvirt must
move the series node_exporter serves from the textfile, and fire the shipped
probe-hung alert in a real Prometheus scraping the endpoint.
"""

from __future__ import annotations

import json
import platform
import re
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any, Dict, Sequence, Set

import pytest
import yaml
from harness.findings import hung_probe
from harness.fixtures import HostileFigures, StartDaemon, WriteConfig
from harness.journald import Journald
from harness.prom import PROMTOOL, NodeExporter, Prometheus, free_port, get, samples
from harness.sandbox import LibvirtSandbox
from harness.wait import wait_for
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from watchdogd.causes import Cause
from watchdogd.config import Config
from watchdogd.kinds import FINDING_KINDS
from watchdogd.model import Finding
from watchdogd.report.figures import Counters, Figures, Snapshot
from watchdogd.report.metrics import Metrics
from watchdogd.state import StateStore

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "packaging" / "prometheus" / "kvm-watchdog-rules.yml"
RULE_TESTS = REPO / "packaging" / "prometheus" / "kvm-watchdog-rules.test.yml"
DASHBOARD = REPO / "packaging" / "grafana" / "kvm-watchdog-fleet.json"
HUNG = "kind=probe_hung,proven=true,severity=critical"


def snapshot(findings: Sequence[Finding] = ()) -> Snapshot:
    return Snapshot(
        tuple(findings),
        {"running": 0, "hung": len(findings), "stale": 0},
        False,
        1,
        "6.1.0-27",
        "6.1.0-26",
        1_700_000_000.0,
        0.002,
        5.0,
    )


def exposition(figures: Figures) -> str:
    m = Metrics(Config().metrics, StateStore("/nonexistent", read_only=True), figures)
    return generate_latest(m.registry).decode()


# ---- the rules and the dashboard -----------------------------------------------------------


def test_promtool_checks_the_rules_and_their_unit_tests_pass() -> None:
    for argv in ([PROMTOOL, "check", "rules", str(RULES)], [PROMTOOL, "test", "rules", str(RULE_TESTS)]):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=str(RULES.parent))
        assert r.returncode == 0, r.stdout + r.stderr


def test_every_shipped_alert_is_tested_firing_and_not_firing() -> None:
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    fires: Set[str] = set()
    silent: Set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else silent).add(check["alertname"])
    assert alerts == fires, f"alerts never tested firing: {alerts - fires}"
    assert alerts == silent, f"alerts never tested silent: {alerts - silent}"
    for g in yaml.safe_load(RULES.read_text())["groups"]:
        for r in g["rules"]:
            assert {"summary", "description", "runbook_url"} <= set(r["annotations"]), r["alert"]


def exposed_names() -> Set[str]:
    figures = Figures(Counters())
    figures.snapshot = snapshot()
    return {s.name for fam in text_string_to_metric_families(exposition(figures)) for s in fam.samples}


def test_every_dashboard_and_rule_query_names_only_metrics_that_exist() -> None:
    names = exposed_names()
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    used = {m for e in exprs for m in re.findall(r"\bkvmwd_[a-z_]+", e)}
    assert used and used <= names, f"named but never exposed: {sorted(used - names)}"
    assert len(dash["panels"]) >= 6 and {p["type"] for p in dash["panels"]} >= {
        "heatmap",
        "timeseries",
        "table",
        "stat",
    }


def test_the_exposition_has_every_kind_bounded_labels_and_the_contract_names() -> None:
    figures = Figures(Counters())
    figures.snapshot = snapshot(
        [
            hung_probe("/var/lib/libvirt/qemu/qmp-AAAAAA", proven=True, pids=[4242], cause=Cause.USERSPACE_DEADLOCK),
            hung_probe("/var/lib/libvirt/qemu/qmp-BBBBBB", proven=False, pids=[4243], cause=Cause.HELD),
        ]
    )
    text = exposition(figures)
    hung = samples(text, "kvmwd_findings_open")
    assert len(hung) == 2 * len(FINDING_KINDS) and sum(hung.values()) == 2, (
        "every kind present, proven and not, 0 when none"
    )
    assert hung[HUNG] == 1 and hung["kind=probe_hung,proven=false,severity=critical"] == 1, (
        "what the alerts page on is libvirt's own probe only"
    )
    for name in (
        "kvmwd_up",
        "kvmwd_build_info",
        "kvmwd_findings_opened_total",
        "kvmwd_actions_total",
        "kvmwd_remediation_paused",
        "kvmwd_probes",
        "kvmwd_domcaps_latency_seconds_bucket",
        "kvmwd_domcaps_timeouts_total",
        "kvmwd_capabilities_cache_entries",
        "kvmwd_kernel_info",
        "kvmwd_last_scan_timestamp_seconds",
        "kvmwd_scan_duration_seconds",
        "kvmwd_diagnosis",
    ):
        assert samples(text, name), name
    causes = samples(text, "kvmwd_diagnosis")
    assert (
        causes["cause=userspace_deadlock"] == 1 and causes["cause=held"] == 1 and causes["cause=no_in_kernel_vgic"] == 0
    )
    assert "qmp-AAAAAA" not in text and "4242" not in text and "msg" not in text, (
        "labels never carry a path, a pid or a message"
    )


def test_the_latency_histogram_separates_milliseconds_from_seconds_from_a_timeout() -> None:
    from watchdogd.model import LatencyResult

    figures = Figures(Counters())
    figures.latency(LatencyResult(True, True, domcaps_ms=4.0), timeout=30)
    figures.latency(LatencyResult(True, True, domcaps_ms=4500.0), timeout=30)
    figures.latency(LatencyResult(True, False, timed_out=True), timeout=30)
    figures.latency(LatencyResult(False, False, error="down"), timeout=30)  # unreachable: not a latency
    buckets = samples(exposition(figures), "kvmwd_domcaps_latency_seconds_bucket")
    assert buckets["le=0.005"] == 1 and buckets["le=5"] == 2 and buckets["le=30"] == 3 and buckets["le=+Inf"] == 3
    assert samples(exposition(figures), "kvmwd_domcaps_timeouts_total")[""] == 1


def test_the_textfile_is_never_seen_half_written(tmp_path: Path) -> None:
    path = tmp_path / "kvm-watchdog.prom"
    figures = Figures(Counters())
    metrics = Metrics(
        Config(metrics=Config().metrics.__class__(textfile=str(path))).metrics,
        StateStore(str(tmp_path / "state")),
        figures,
    )
    stop = threading.Event()
    reads = [0]

    def write() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            metrics.publish(snapshot([hung_probe(f"/d/qmp-{i:06d}") for i in range(n % 50)]))

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_for(path.exists, 10, "the first textfile")
        while reads[0] < 2000:
            text = path.read_text()
            families = {f.name for f in text_string_to_metric_families(text)}
            assert {"kvmwd_up", "kvmwd_scan_interval_seconds"} <= families, "a whole exposition, first family to last"
            reads[0] += 1
    finally:
        stop.set()
        writer.join(10)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".kvm-watchdog.prom")], "no temp file left"


# ---- the real node_exporter and the real Prometheus -----------------------------------------


def _config(libvirt: LibvirtSandbox, state_dir: Path, **metrics: Any) -> Dict[str, object]:
    return libvirt.config(
        state_dir,
        interval="0.5s",
        events="journal",
        detect={"probe_hung_after": "2s"},
        latency={"enabled": False},
        metrics=metrics,
        policies=[{"name": "tell", "on": "probe_hung", "do": ["alert"]}],  # seen first, acted on after the reload
    )


def test_the_host_info_names_the_architecture_and_the_versions_libvirt_reports(
    journald: Journald,
    libvirt: LibvirtSandbox,
    state_dir: Path,
    tmp_path: Path,
    write_config: WriteConfig,
    start_daemon: StartDaemon,
) -> None:
    """What a fleet groups a rollout by: the arch, libvirt's version and its QEMU's, as `virsh version` says them."""
    said = dict(
        line.split(": ", 1) for line in libvirt.virsh("version").stdout.splitlines() if ": " in line
    )  # "Using library: libvirt 9.0.0", "Running hypervisor: QEMU 7.2.19"
    expected = (
        f"arch={platform.machine()},libvirt={said['Using library'].split()[-1]},"
        f"qemu={said['Running hypervisor'].split()[-1]}"
    )
    textfile = tmp_path / "kvm-watchdog.prom"
    cfg = libvirt.config(
        state_dir,
        interval="1s",
        events="journal",
        latency={"every": "5s", "timeout": "5s", "slow": "4s", "when": "always"},
        metrics={"textfile": str(textfile)},
    )
    start_daemon(write_config(cfg))

    def info() -> Dict[str, float]:
        try:
            return samples(textfile.read_text(), "kvmwd_host_info")
        except OSError:
            return {}

    wait_for(lambda: info().get(expected) == 1, 60, f"kvmwd_host_info{{{expected}}}")
    assert list(info()) == [expected], "one series: the host's"


def test_node_exporter_serves_a_replayed_hang_found_then_fixed(
    journald: Journald,
    libvirt: LibvirtSandbox,
    state_dir: Path,
    tmp_path: Path,
    write_config: WriteConfig,
    start_daemon: StartDaemon,
) -> None:
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    exporter = NodeExporter(textdir, tmp_path)
    try:
        cfg = _config(libvirt, state_dir, textfile=str(textdir / "kvm-watchdog.prom"))
        path = Path(write_config(cfg))
        daemon = start_daemon(str(path))
        scrape = wait_for(
            lambda: (t := exporter.scrape()) and "kvmwd_up" in t and t, 30, "node_exporter to serve the kvmwd_ series"
        )
        assert samples(scrape, "kvmwd_findings_open")[HUNG] == 0
        kills_before = samples(scrape, "kvmwd_actions_total").get("action=kill_probe,result=ok", 0)
        check = subprocess.run([PROMTOOL, "check", "metrics"], input=scrape, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        libvirt.hang("hang-init", count=1)
        wait_for(
            lambda: samples(exporter.scrape(), "kvmwd_findings_open")[HUNG] == 1,
            30,
            "probe_hung 0 -> 1 in node_exporter",
        )
        cfg["policies"] = [{"name": "kill", "on": "probe_hung", "do": ["kill_probe"]}]
        path.write_text(yaml.safe_dump(cfg))
        daemon.signal(signal.SIGHUP)
        wait_for(
            lambda: samples(exporter.scrape(), "kvmwd_findings_open")[HUNG] == 0, 30, "probe_hung 1 -> 0 once killed"
        )
        after = exporter.scrape()
        assert samples(after, "kvmwd_actions_total")["action=kill_probe,result=ok"] == kills_before + 1
        assert samples(after, "kvmwd_findings_opened_total")["kind=probe_hung"] >= 1
        daemon.stop()
        # counters survive a restart: the next daemon starts from what the last one counted
        again = start_daemon(str(path))
        wait_for(
            lambda: (s := samples(exporter.scrape(), "kvmwd_up")) and s[""] == 1 and again.alive(),
            30,
            "the restarted daemon's textfile",
        )
        assert samples(exporter.scrape(), "kvmwd_actions_total")["action=kill_probe,result=ok"] == kills_before + 1
    finally:
        exporter.stop()


def test_prometheus_scraping_the_endpoint_fires_the_probe_hung_alert(
    journald: Journald,
    libvirt: LibvirtSandbox,
    state_dir: Path,
    tmp_path: Path,
    write_config: WriteConfig,
    start_daemon: StartDaemon,
) -> None:
    port = free_port()
    daemon = start_daemon(write_config(_config(libvirt, state_dir, listen=f"127.0.0.1:{port}")))
    wait_for(lambda: "kvmwd_up 1.0" in get(f"http://127.0.0.1:{port}/metrics"), 30, "the /metrics endpoint")
    work = tmp_path / "prometheus"
    work.mkdir()
    prom = Prometheus([f"127.0.0.1:{port}"], RULES, work)
    try:
        wait_for(lambda: prom.api("query?query=kvmwd_up")["result"], 60, "Prometheus to scrape the watchdog")
        assert prom.alerts("firing") == [], "a healthy host fires nothing"
        libvirt.hang("hang-init", count=1)
        [alert] = wait_for(
            lambda: [a for a in prom.alerts("firing") if a["labels"]["alertname"] == "KvmWatchdogProbeHung"],
            60,
            "KvmWatchdogProbeHung to fire",
        )
        assert (
            alert["labels"]["severity"] == "critical" and "capability probe is hung" in alert["annotations"]["summary"]
        )
        libvirt.release()
        wait_for(
            lambda: not [a for a in prom.alerts() if a["labels"]["alertname"] == "KvmWatchdogProbeHung"],
            60,
            "the alert to clear",
        )
        assert daemon.alive()
    finally:
        prom.stop()


@pytest.mark.parametrize(
    "value, message",
    [("9877", "must be HOST:PORT"), (":0", "must be HOST:PORT"), ("::1:9877", "an IPv6 address goes in brackets")],
)
def test_a_bad_listen_address_is_a_config_error_with_its_line(tmp_path: Path, value: str, message: str) -> None:
    from harness.cli import run_cli

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"state_dir: {tmp_path}/state\nmetrics:\n  listen: '{value}'\n")
    r = run_cli("config", "check", str(cfg))
    assert r.rc == 2 and f"{cfg}:3: metrics.listen: {message}" in r.err, r.err


# ---- trust and bounds: the textfile's dir owner and the endpoint's clients ----------------------

SWAPPER = r"""
import ctypes, os, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
d, victim, until = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])
fd = libc.inotify_init1(os.O_NONBLOCK)
libc.inotify_add_watch(fd, d.encode(), 0x100)  # IN_CREATE: react the moment root makes its temp file
import select
while time.monotonic() < until:
    if not select.select([fd], [], [], 0.5)[0]:
        continue
    data = os.read(fd, 65536)
    at = 0
    while at + 16 <= len(data):
        wd, mask, cookie, length = struct.unpack_from("iIII", data, at)
        name = data[at + 16 : at + 16 + length].rstrip(b"\0").decode()
        at += 16 + length
        if name.endswith(".tmp"):
            p = os.path.join(d, name)
            try:
                os.unlink(p)
                os.symlink(victim, p)
            except OSError:
                pass
"""


@pytest.mark.hostile
def test_root_never_chmods_nor_writes_a_file_the_textfile_dirs_owner_swaps_in(figures: HostileFigures) -> None:
    """Debian's textfile dir lies in the prometheus user's tree: that uid (nobody here) swaps every temp name for a link to a root-only file."""
    import os

    from harness.actors import SYSTEM_PYTHON, as_nobody, host_root, nobodys

    root = host_root()
    try:
        textfile_dir = nobodys(root / "textfile", 0o755)
        victim = root / "root-only"
        victim.write_text("root's own\n")
        os.chmod(victim, 0o600)
        path = textfile_dir / "kvm-watchdog.prom"
        metrics = Metrics(
            Config(metrics=Config().metrics.__class__(textfile=str(path))).metrics,
            StateStore(str(root / "state")),
            Figures(Counters()),
        )
        swapper = subprocess.Popen(as_nobody([SYSTEM_PYTHON, "-c", SWAPPER, str(textfile_dir), str(victim), "30"]))
        try:
            for _ in range(3000):  # the old chmod-by-path lost this race within 3,000 writes, every time of three
                metrics.publish(snapshot())
        finally:
            swapper.kill()
            swapper.wait(10)
        st = victim.stat()
        figures.files_changed_outside_state = int(
            (st.st_mode & 0o777, st.st_uid, victim.read_text()) != (0o600, 0, "root's own\n")
        )
        assert (st.st_mode & 0o777, st.st_uid, victim.read_text()) == (0o600, 0, "root's own\n"), (
            "root changed a file it did not make"
        )
        assert not path.is_symlink() or path.resolve() == victim, (
            "whatever the name holds, root wrote nothing through it"
        )
        metrics.publish(snapshot())  # the last write: with no swapper left, the textfile is root's own again
        assert (
            path.is_file()
            and not path.is_symlink()
            and "kvmwd_up" in path.read_text()
            and (path.stat().st_mode & 0o777) == 0o644
        )
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)


def test_config_check_refuses_a_textfile_dir_behind_a_link(tmp_path: Path) -> None:
    from harness.cli import run_cli

    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"state_dir: {tmp_path}/state\nmetrics:\n  textfile: {tmp_path}/link/kvm-watchdog.prom\n")
    r = run_cli("config", "check", str(cfg))
    assert r.rc == 2 and f"{cfg}:3: metrics.textfile: {tmp_path}/link is a symbolic link" in r.err, r.err


@pytest.mark.hostile
def test_an_idle_connection_stops_no_scrape_and_an_ipv6_listen_address_binds() -> None:
    import socket

    from watchdogd.config import MetricsConfig

    port = free_port()
    metrics = Metrics(
        MetricsConfig(listen=f"127.0.0.1:{port}"), StateStore("/nonexistent", read_only=True), Figures(Counters())
    )
    assert metrics.start() is None
    try:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]  # connect, send nothing
        assert "kvmwd_up" in get(f"http://127.0.0.1:{port}/metrics", timeout=4), (
            "served beside the idle ones, before their 5 s timeout"
        )
        for s in idle:
            s.close()
    finally:
        metrics.stop(None)
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        port6 = s.getsockname()[1]
    v6 = Metrics(
        MetricsConfig(listen=f"[::1]:{port6}"), StateStore("/nonexistent", read_only=True), Figures(Counters())
    )
    assert v6.start() is None, "the bracketed IPv6 address config check accepts is one the endpoint binds"
    try:
        assert "kvmwd_up" in get(f"http://[::1]:{port6}/metrics")
    finally:
        v6.stop(None)


@pytest.mark.hostile
def test_eight_clients_trickling_a_byte_at_a_time_stop_no_scrape() -> None:
    """8 connections that send one byte every 2 s (each byte restarts a socket timeout): 4 of 4 scrapes answered."""
    import socket
    import threading

    from watchdogd.config import MetricsConfig

    port = free_port()
    metrics = Metrics(
        MetricsConfig(listen=f"127.0.0.1:{port}"), StateStore("/nonexistent", read_only=True), Figures(Counters())
    )
    assert metrics.start() is None
    stop = threading.Event()

    def trickle() -> None:
        while not stop.is_set():  # reconnects as soon as it is cut off
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    for byte in b"GET /metrics HTTP/1.1\r\n":
                        s.sendall(bytes([byte]))
                        if stop.wait(2.0):
                            return
            except OSError:
                continue

    slow = [threading.Thread(target=trickle, daemon=True) for _ in range(8)]
    try:
        for t in slow:
            t.start()
        answered = 0
        for _ in range(4):
            stop.wait(3.0)  # a scrape interval; the trickling clients hold their connections meanwhile
            answered += "kvmwd_up" in get(f"http://127.0.0.1:{port}/metrics", timeout=4)
        assert answered == 4
    finally:
        stop.set()
        for t in slow:
            t.join(5)
        metrics.stop(None)
