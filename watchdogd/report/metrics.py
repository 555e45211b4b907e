"""Prometheus metrics: this host's findings, actions and libvirt latency, for the fleet's dashboards.

Built with the official client (prometheus_client, >= 0.16 as Debian 12 ships it),
never a hand-written exposition format. One collector reads the daemon's latest
snapshot, which the loop replaces whole after each scan, so a scrape from the HTTP
thread always sees one scan's figures. Two outlets, either or both (config
`metrics:`): a node_exporter textfile, replaced atomically (the client's own
exposition, generate_latest, into a temp file made with O_EXCL beside it, then a
rename: the temp name does not end in .prom, so the collector never reads it
half-written, and a link planted in that dir is never written through), and an
HTTP /metrics endpoint (loopback unless the operator names another address).

The figures themselves (counters kept across restarts, one snapshot per scan) are
report.figures'; this module is imported only when an outlet is configured, so a
host without the client runs the watchdog all the same. Labels are bounded: finding
kinds, severities, actions, results, probe states, the kernel release; never a pid,
a path or a message.
"""

from __future__ import annotations

import os
import platform
import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any, Dict, Iterator, List, Optional, Tuple, Type
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import __version__
from ..causes import HUNG_PROBE_CAUSES, Cause
from ..config import MetricsConfig
from ..fsafe import write_file_in
from ..kinds import FINDING_KINDS
from ..model import ActionName
from ..problems import Problem
from ..state import StateError, StateStore
from .figures import BUCKETS, PROBE_STATES, RESULTS, STATE_FILE, Figures, Snapshot

# the causes always present (0 when none); an operator's table may add a few more, capped
CAUSES = (
    *HUNG_PROBE_CAUSES,
    *("no_in_kernel_vgic", "kernel_vpmu", "kvm_unavailable"),  # VM starts: the shipped signature table's
    Cause.KVM_UNUSABLE,
)
MAX_CAUSES = 32


class FleetCollector(Collector):
    """A prometheus_client collector over the daemon's Figures."""

    def __init__(self, figures: Figures):
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        snap = self.figures.snapshot
        c = self.figures.copy_counters()
        yield _gauge(
            "kvmwd_up", "1 while the watchdog runs and scans; 0 once it stopped cleanly.", int(snap.up) if snap else 0
        )
        info = GaugeMetricFamily("kvmwd_build_info", "The running kvm-watchdog's version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield from self._findings(snap)
        yield from self._causes(snap)
        opened = CounterMetricFamily(
            "kvmwd_findings_opened", "Findings opened (each occurrence once), by kind.", labels=["kind"]
        )
        for kind in FINDING_KINDS:
            opened.add_metric([kind], c.opened.get(kind, 0))
        yield opened
        actions = CounterMetricFamily(
            "kvmwd_actions", "Actions taken, by action and result.", labels=["action", "result"]
        )
        for action in ActionName:
            for result in RESULTS:
                actions.add_metric([action, result], c.actions.get(f"{action}/{result}", 0))
        yield actions
        yield CounterMetricFamily(
            "kvmwd_domcaps_timeouts",
            "getDomainCapabilities calls that did not answer within latency.timeout.",
            value=c.timeouts,
        )
        cumulative, running = [], 0
        for le, count in zip([*(f"{b:g}" for b in BUCKETS), "+Inf"], c.buckets):
            running += count
            cumulative.append((le, running))
        yield HistogramMetricFamily(
            "kvmwd_domcaps_latency_seconds",
            "getDomainCapabilities latency (a timeout counts as latency.timeout).",
            buckets=cumulative,
            sum_value=c.latency_sum,
        )
        if snap is not None:
            yield from self._host(snap)

    def _findings(self, snap: Optional[Snapshot]) -> Iterator[Metric]:
        open_now = GaugeMetricFamily(
            "kvmwd_findings_open",
            "Findings open now, by kind, severity and whether the qemu user could have made it (proven=false); every "
            "kind, 0 when none.",
            labels=["kind", "severity", "proven"],
        )
        counts: Dict[Tuple[str, bool], int] = {}
        for f in snap.findings if snap else ():
            counts[(f.kind, f.proven)] = counts.get((f.kind, f.proven), 0) + 1
        for kind, severity in FINDING_KINDS.items():
            for proven in (True, False):
                open_now.add_metric(
                    [kind, severity.label, "true" if proven else "false"], counts.get((kind, proven), 0)
                )
        yield open_now

    def _causes(self, snap: Optional[Snapshot]) -> Iterator[Metric]:
        diag = GaugeMetricFamily(
            "kvmwd_diagnosis",
            "Open findings by diagnosed cause (hung probes, VM start failures, KVM).",
            labels=["cause"],
        )
        counts: Dict[str, int] = dict.fromkeys(CAUSES, 0)
        for f in snap.findings if snap else ():
            cause = f.evidence.cause()
            if cause is not None and (cause in counts or len(counts) < MAX_CAUSES):
                counts[cause] = counts.get(cause, 0) + 1
        for cause, n in sorted(counts.items()):
            diag.add_metric([cause], n)
        yield diag

    def _host(self, snap: Snapshot) -> Iterator[Metric]:
        yield _gauge(
            "kvmwd_remediation_paused",
            "1 while the circuit breaker holds remediation (limits.actions reached).",
            int(snap.paused),
        )
        probes = GaugeMetricFamily(
            "kvmwd_probes",
            "Capability probes by state: running (not hung yet), hung, stale (dir left behind).",
            labels=["state"],
        )
        for state in PROBE_STATES:
            probes.add_metric([state], snap.probes.get(state, 0))
        yield probes
        if snap.cache_entries is not None:
            yield _gauge(
                "kvmwd_capabilities_cache_entries", "Entries in libvirt's QEMU capabilities cache.", snap.cache_entries
            )
        kernel = GaugeMetricFamily(
            "kvmwd_kernel_info",
            "The running kernel, and the last one on which probing worked.",
            labels=["release", "last_good"],
        )
        kernel.add_metric([snap.kernel_release, snap.kernel_last_good], 1)
        yield kernel
        yield _gauge(
            "kvmwd_vm_starts_blocked",
            "1 while the host condition vm_starts_blocked is open: a finding that stops VM starts here (a scheduler "
            "should send VMs elsewhere).",
            float(snap.vm_starts_blocked),
        )
        host = GaugeMetricFamily(
            "kvmwd_host_info",
            "The host's architecture, and the libvirt and QEMU versions its last answered latency call reported (empty "
            "until one has): what a fleet groups a rollout by.",
            labels=["arch", "libvirt", "qemu"],
        )
        versions = self.figures.versions
        host.add_metric([platform.machine(), versions.libvirt, versions.qemu], 1)
        yield host
        yield _gauge("kvmwd_last_scan_timestamp_seconds", "When the last scan was taken (Unix time).", snap.last_scan)
        yield _gauge("kvmwd_scan_duration_seconds", "How long the last scan took.", snap.scan_seconds)
        yield _gauge(
            "kvmwd_scan_interval_seconds",
            "The configured full-scan interval (for the watchdog-stale alert).",
            snap.interval,
        )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


HANDLER_TIMEOUT_S = 5.0  # a connection that sends nothing for this long is closed
REQUEST_DEADLINE_S = 3.0  # the whole request and its answer: a byte every few seconds holds no slot for longer
MAX_CONNECTIONS = 16  # scrapes served at once; past it a connection is closed at once


class _Quiet(WSGIRequestHandler):
    timeout = HANDLER_TIMEOUT_S  # StreamRequestHandler sets it on the socket: an idle client cannot hold a thread

    def handle(self) -> None:
        """Within REQUEST_DEADLINE_S or not at all: a scrape takes milliseconds; a client that trickles its request
        byte by byte (each byte restarting the socket timeout) is cut off at the deadline."""
        cut = threading.Timer(REQUEST_DEADLINE_S, self._cut)
        cut.daemon = True
        cut.start()
        try:
            super().handle()
        finally:
            cut.cancel()

    def _cut(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the stdlib's name)
        pass  # a scrape every 15 s is not news for the journal


class _Server(ThreadingMixIn, WSGIServer):
    """One thread a scrape, at most MAX_CONNECTIONS at once: one idle connection stops nothing."""

    daemon_threads = True

    def __init__(self, address: Tuple[str, int], handler: Type[WSGIRequestHandler]):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: the scraper retries at its next interval
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class Metrics:
    """The outlets: a textfile for node_exporter and/or an HTTP endpoint; both optional."""

    def __init__(self, config: MetricsConfig, state: StateStore, figures: Figures):
        self.config = config
        self.state = state
        self.figures = figures
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(FleetCollector(figures))
        self._server: Optional[WSGIServer] = None
        self._saved: Optional[Dict[str, object]] = None

    def start(self) -> Optional[str]:
        """Open the HTTP endpoint when configured; the problem, if it cannot be."""
        if not self.config.listen:
            return None
        host, port = self.config.listen_address
        try:
            self._server = make_server(
                host, port, make_wsgi_app(self.registry), server_class=_Server, handler_class=_Quiet
            )
        except OSError as exc:
            return f"cannot serve metrics on {self.config.listen}: {exc.strerror or exc}"
        threading.Thread(target=self._server.serve_forever, name="kvm-watchdog-metrics", daemon=True).start()
        return None

    def publish(self, snapshot: Snapshot) -> List[Problem]:
        """A new scan's figures to every outlet; the counters saved when they changed. Problems, if any."""
        self.figures.snapshot = snapshot
        problems: List[Problem] = []
        if self.config.textfile:
            try:
                _replace(self.config.textfile, generate_latest(self.registry))
            except OSError as exc:
                text = f"cannot write the metrics textfile {self.config.textfile}: {exc.strerror or exc}"
                problems.append(Problem(text, key=f"metrics-textfile:{self.config.textfile}"))
        counters = self.figures.copy_counters().to_json()
        if counters != self._saved and not self.state.read_only:
            try:
                self.state.write_json(STATE_FILE, counters, durable=False)
                self._saved = counters
            except StateError as exc:
                problems.append(exc.problem("; metric counters are kept in memory only"))
        return problems

    def stop(self, last: Optional[Snapshot]) -> None:
        """kvmwd_up 0 in the textfile (a node_exporter would go on serving the last one), the endpoint closed."""
        if last is not None:
            self.publish(Snapshot(**{**last.__dict__, "up": False}))
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _replace(path: str, data: bytes) -> None:
    """Write path whole or not at all, through its dir's fd (fsafe.write_file_in); 0644: node_exporter runs as its own
    user."""
    directory, name = os.path.split(path)
    write_file_in(directory, name, data, 0o644)
