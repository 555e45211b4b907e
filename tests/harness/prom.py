"""The real Prometheus pieces, from Debian's packages, on loopback: node_exporter and Prometheus.

Each runs as our child with a temp dir and a free loopback port, and is ended by
PID; what a test reads from them is what an operator's fleet would read.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

from prometheus_client.parser import text_string_to_metric_families

from .wait import wait_for

NODE_EXPORTER = shutil.which("prometheus-node-exporter") or "/usr/bin/prometheus-node-exporter"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (loopback only)
        return str(r.read().decode())


def samples(exposition: str, name: str) -> Dict[str, float]:
    """{label string: value} of every sample called `name` in a text exposition."""
    out: Dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            if s.name == name:
                out[",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))] = s.value
    return out


class _Child:
    def __init__(self, argv: List[str], log: Path):
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


class NodeExporter(_Child):
    """node_exporter with only its textfile collector, reading `directory`."""

    def __init__(self, directory: Path, workdir: Path):
        self.port = free_port()
        super().__init__(
            [
                NODE_EXPORTER,
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--collector.disable-defaults",
                "--collector.textfile",
                f"--collector.textfile.directory={directory}",
            ],
            workdir / "node_exporter.log",
        )
        wait_for(self._answers, 30, "node_exporter to answer")

    def _answers(self) -> bool:
        try:
            return "node_textfile_scrape_error" in self.scrape()
        except OSError:
            return False

    def scrape(self) -> str:
        return get(f"http://127.0.0.1:{self.port}/metrics")


class Prometheus(_Child):
    """A Prometheus scraping `targets` every second and evaluating `rules` every second, in a temp data dir."""

    def __init__(self, targets: List[str], rules: Path, workdir: Path):
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(rules)],
                    "scrape_configs": [{"job_name": "kvm-watchdog", "static_configs": [{"targets": targets}]}],
                }
            )
        )
        (workdir / "tsdb").mkdir()
        super().__init__(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            workdir / "prometheus.log",
        )
        wait_for(self._ready, 60, "Prometheus to be ready")

    def _ready(self) -> bool:
        try:
            return "Ready" in get(f"http://127.0.0.1:{self.port}/-/ready")
        except OSError:
            return False

    def api(self, path: str) -> Any:
        return json.loads(get(f"http://127.0.0.1:{self.port}/api/v1/{path}"))["data"]

    def alerts(self, state: Optional[str] = None) -> List[Dict[str, Any]]:
        return [a for a in self.api("alerts")["alerts"] if state is None or a["state"] == state]
