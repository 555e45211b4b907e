"""Fixtures: a real sandboxed libvirt, a state dir, configs on disk, the CLI in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.cli import REPO  # noqa: E402
from harness.fixtures import HostileFigures, Processes, StartDaemon, WriteConfig  # noqa: E402
from harness.journald import Journald  # noqa: E402
from harness.sandbox import LibvirtSandbox  # noqa: E402
from harness.service import NotifyListener, RunningDaemon  # noqa: E402


def _running_sandbox() -> Iterator[LibvirtSandbox]:
    box = LibvirtSandbox().start()
    try:
        yield box
    finally:
        box.destroy()


@pytest.fixture(scope="session")
def shared_libvirt() -> Iterator[LibvirtSandbox]:
    """One sandboxed libvirtd for the session (starting one takes about a second)."""
    yield from _running_sandbox()


@pytest.fixture
def libvirt(shared_libvirt: LibvirtSandbox) -> Iterator[LibvirtSandbox]:
    """The shared sandbox, healthy at the start of a test and put back after it."""
    shared_libvirt.reset()
    yield shared_libvirt
    shared_libvirt.reset()


@pytest.fixture
def own_libvirt() -> Iterator[LibvirtSandbox]:
    """A sandbox of the test's own, for tests that stop or kill libvirtd."""
    yield from _running_sandbox()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    counter = [0]

    def write(cfg: Dict[str, Any]) -> str:
        counter[0] += 1
        path = tmp_path / f"config-{counter[0]}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return str(path)

    return write


@pytest.fixture(scope="session")
def journald() -> Iterator[Journald]:
    """The real journald: the one already running, or one started (and later stopped) here."""
    j = Journald().ensure()
    yield j
    j.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(tmp_path / "notify.sock")
    yield listener
    listener.close()


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[StartDaemon]:
    """Start `kvm-watchdog run` processes; any still running at the end are stopped, then killed."""
    started: List[RunningDaemon] = []

    def start(config: str, **kwargs: Any) -> RunningDaemon:
        workdir = tmp_path / f"daemon-{len(started)}"
        workdir.mkdir()
        d = RunningDaemon(config, workdir, **kwargs)
        started.append(d)
        return d

    yield start
    for d in started:
        try:
            d.stop(10)
        except subprocess.TimeoutExpired:
            d.kill()


# ---- the hostile suite's figures (`make hostile` prints them) ----------------------------


FIGURES = pytest.StashKey[HostileFigures]()


class HostileTally:
    """Counts the hostile scenarios that passed and failed, where the reports arrive: the one process of a plain
    run, the controller of a pytest-xdist one (a worker's reports reach it too; its figures come at its end)."""

    def __init__(self, figures: HostileFigures):
        self.figures = figures

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" and "hostile" in report.keywords:
            self.figures.scenarios += report.passed
            self.figures.failed += report.failed


def pytest_configure(config: pytest.Config) -> None:
    config.stash[FIGURES] = HostileFigures()
    if not hasattr(config, "workerinput"):  # a pytest-xdist worker sends its reports on, and counts none
        config.pluginmanager.register(HostileTally(config.stash[FIGURES]), "kvmwd-hostile-tally")
    config.addinivalue_line("markers", "hostile: faults, bad input and races (make hostile)")
    config.addinivalue_line("markers", "system: the package under a real systemd in a container (make system-test)")
    config.addinivalue_line(
        "markers", "matrix: the same stories on the other hosts of harness/hosts.py (make matrix; not in make test)"
    )
    for name, what in REAL_PARTS.values():
        config.addinivalue_line("markers", f"{name}: {what} (set from the fixtures the test uses)")
    config.addinivalue_line("markers", "unit: recorded inputs only, no root, no libvirt (make unit)")
    config.addinivalue_line("markers", "xdist_group(name): the tests one pytest-xdist worker runs in order (_group)")
    config.addinivalue_line("markers", "py37: the package, its CLI and make unit's tests on a real CPython 3.7.4")
    config.addinivalue_line("markers", "root: recorded inputs that only root can write (files of other uids)")


# the real parts a test stands on, named by the fixture that brings them: -m selects by layer,
# e.g. `pytest -m "not libvirt and not system"` runs what needs neither a libvirt nor a container
REAL_PARTS = {
    "libvirt": ("libvirt", "a real sandboxed session libvirtd and QEMU"),
    "own_libvirt": ("libvirt", "a real sandboxed session libvirtd and QEMU"),
    "shared_libvirt": ("libvirt", "a real sandboxed session libvirtd and QEMU"),
    "journald": ("journal", "the real systemd-journald, read back with journalctl"),
    "start_daemon": ("daemon", "`kvm-watchdog run` as a process, the console script"),
}


def _group(item: pytest.Item, in_unit: bool) -> None:
    """Where `make test` (pytest-xdist, --dist loadgroup) runs a test: the stories of a booted host (a container,
    a VM) each on a worker of their own, side by side, since they mostly wait on libvirt's own timers; a module
    that boots one host for all its tests marks itself one group; every other story that stands on this host
    (its journald, its session libvirts, its /proc) on one worker, in order, as a plain run does; the pure ones
    wherever there is room."""
    booted = item.get_closest_marker("system") or item.get_closest_marker("matrix")
    if not booted and not in_unit and not item.get_closest_marker("xdist_group"):
        item.add_marker(pytest.mark.xdist_group("host"))


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own, which reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    """Each test marked with the real parts its fixtures bring; a unit test that asks for one is a mistake."""
    unit_dir = Path(__file__).resolve().parent / "unit"
    for item in items:
        used = {REAL_PARTS[f][0] for f in getattr(item, "fixturenames", ()) if f in REAL_PARTS}
        in_unit = unit_dir in Path(str(item.fspath)).resolve().parents or str(item.fspath).startswith(
            str(REPO / "watchdogd")
        )
        _group(item, in_unit)
        if in_unit and used:
            raise pytest.UsageError(f"{item.nodeid} is a unit test but uses real parts: {', '.join(sorted(used))}")
        for name in sorted(used):
            item.add_marker(name)
        if in_unit:
            item.add_marker("unit")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A pytest-xdist worker hands what its hostile tests measured to the controller (pytest_testnodedown)."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["hostile"] = session.config.stash[FIGURES].measured()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    measured = getattr(node, "workeroutput", {}).get("hostile")
    if measured:
        node.config.stash[FIGURES].add(measured)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    f = config.stash[FIGURES]
    if f.scenarios or f.failed:
        terminalreporter.write_sep("=", "hostile conditions")
        terminalreporter.write_line(f"scenarios survived: {f.scenarios} (failed: {f.failed})")
        terminalreporter.write_line(f"inputs fuzzed:      {f.inputs_fuzzed}")
        terminalreporter.write_line(f"wrong signals sent: {f.wrong_signals} (must be 0)")
        terminalreporter.write_line(f"bytes lost:         {f.bytes_lost} (must be 0)")
        if f.genuine_kill_delay_s is not None:
            terminalreporter.write_line(f"forged probes that escalated: {f.forged_escalations} (must be 0)")
            terminalreporter.write_line(
                f"genuine hung probe killed {f.genuine_kill_delay_s:.2f}s past its deadline under a forged flood (goal <= 1 s)"
            )
        for name, mb in sorted(f.peak_rss_mb.items()):
            terminalreporter.write_line(f"peak RSS, {name}: {mb:.1f} MB")
        if f.raw_controls_in_output is not None:
            terminalreporter.write_line(
                f"raw ESC/BEL/newline from untrusted input in any output: {f.raw_controls_in_output} (must be 0)"
            )
        if f.files_changed_outside_state is not None:
            terminalreporter.write_line(
                f"files outside the state dir whose mode or owner root changed: {f.files_changed_outside_state} (must be 0)"
            )
        if f.longest_ping_gap_s is not None:
            terminalreporter.write_line(
                f"longest gap between WATCHDOG=1 pings under the floods: {f.longest_ping_gap_s:.2f}s (pings every 5 s; goal <= 15 s)"
            )
        if f.churn_scans_per_s is not None:
            terminalreporter.write_line(
                f"scans per second under mkdir/rmdir churn: {f.churn_scans_per_s:.2f} (goal <= 2)"
            )
        results = os.environ.get("KVMWD_HOSTILE_RESULTS")
        if results and not f.failed:
            with open(results, "w") as out:
                json.dump(
                    dict(asdict(f), machine=f"{os.cpu_count()} cpus, kernel {os.uname().release}"),
                    out,
                    indent=1,
                    sort_keys=True,
                )
                out.write("\n")
            terminalreporter.write_line(f"figures written to {results}")


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> HostileFigures:
    return request.config.stash[FIGURES]


@pytest.fixture
def bystanders(figures: HostileFigures) -> Iterator[Processes]:
    """Processes that must never be signalled; any that died counts as a wrong signal."""
    started: Processes = []
    yield started
    dead = [p.pid for p in started if p.poll() is not None]
    figures.wrong_signals += len(dead)
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(10)
    assert dead == [], f"bystanders {dead} were signalled"


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .deb, built once a run (scripts/build-deb), for the host stories."""
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([str(REPO / "scripts" / "build-deb"), str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return out
