"""The unit and the catalog, checked with systemd's own tools (there is no systemd PID 1 here)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import List

import pytest

from watchdogd.report.events import MESSAGE_IDS

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "kvm-watchdog.service"
CATALOG = REPO / "systemd" / "kvm-watchdog.catalog"


@pytest.fixture
def unit_here(tmp_path: Path) -> Path:
    """The shipped unit, its ExecStart pointed at the command this checkout installed (verify wants it to exist)."""
    command = shutil.which("kvm-watchdog") or str(Path(__import__("sys").executable).parent / "kvm-watchdog")
    text = UNIT.read_text().replace("/usr/bin/kvm-watchdog", command)
    assert text.count(command) == 1, "one ExecStart runs the command"
    copy = tmp_path / "kvm-watchdog.service"
    copy.write_text(text)
    return copy


def test_systemd_analyze_verify_finds_nothing_wrong_with_the_unit(unit_here: Path) -> None:
    # the man pages ship with the packages; --man=no until they are installed
    r = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit_here)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def exposure(unit: Path) -> float:
    """What `systemd-analyze security` rates a unit file (lower is tighter)."""
    r = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
    assert score, r.stdout[-2000:] + r.stderr
    return float(score.group(1))


def test_the_unit_is_locked_down_to_1_6_or_lower_in_systemd_analyze_security(unit_here: Path) -> None:
    assert exposure(unit_here) <= 1.6


def test_the_unit_has_what_the_service_needs() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "ExecStart=/usr/bin/kvm-watchdog run",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "StateDirectory=kvm-watchdog",
        "CapabilityBoundingSet=CAP_KILL CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER",
        "Wants=kvm-watchdog-capture.socket kvm-watchdog-hook.socket",
    ):
        assert line in text.splitlines(), line
    assert re.search(r"^WatchdogSec=\d+s$", text, re.M)
    assert re.search(r"^After=.*libvirtd\.service.*virtqemud\.service", text, re.M)


def socket_activated(name: str, tmp_path: Path) -> float:
    """A helper pair (NAME.socket, NAME@.service): the socket root's alone, both verified by systemd-analyze; the
    template's exposure (its ExecStart pointed at this venv's console script)."""
    socket_unit = (REPO / "systemd" / f"{name}.socket").read_text().splitlines()
    assert "SocketMode=0600" in socket_unit and "SocketUser=root" in socket_unit and "Accept=yes" in socket_unit
    command = shutil.which("kvm-watchdog") or str(Path(__import__("sys").executable).parent / "kvm-watchdog")
    copy = tmp_path / f"{name}@x.service"
    copy.write_text((REPO / "systemd" / f"{name}@.service").read_text().replace("/usr/bin/kvm-watchdog", command))
    for unit in (copy, REPO / "systemd" / f"{name}.socket"):
        r = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    return exposure(copy)


HELPER = REPO / "systemd" / "kvm-watchdog-capture@.service"


def test_the_capture_helper_reads_apart_with_ptraces_read_access_only_and_is_locked_down(tmp_path: Path) -> None:
    """The daemon keeps no CAP_SYS_PTRACE (it reaches every process's memory and root through /proc/PID/root); the
    helper that reads a hung probe's syscall and wchan is a dynamic uid that can read, and write nothing of anyone's."""
    assert "CAP_SYS_PTRACE" not in [
        w for line in UNIT.read_text().splitlines() if line.startswith("Capab") for w in line.split()
    ]
    text = HELPER.read_text()
    for line in (
        "DynamicUser=yes",
        "CapabilityBoundingSet=CAP_SYS_PTRACE CAP_DAC_READ_SEARCH",
        "AmbientCapabilities=CAP_SYS_PTRACE CAP_DAC_READ_SEARCH",
        "StandardInput=socket",
        "ExecStart=/usr/bin/kvm-watchdog capture-helper",
    ):
        assert line in text.splitlines(), line
    assert socket_activated("kvm-watchdog-capture", tmp_path) <= 1.6


def test_hooks_run_apart_with_the_network_the_daemons_unit_has_not(tmp_path: Path) -> None:
    """The daemon has no network (a hook that tells nova or Kubernetes needs one): a socket only root may use starts
    the hook runner, which runs a hook of its own config's by name, with the network and no capability."""
    assert "Wants=kvm-watchdog-capture.socket kvm-watchdog-hook.socket" in UNIT.read_text().splitlines()
    assert "PrivateNetwork=yes" in UNIT.read_text().splitlines()
    runner = REPO / "systemd" / "kvm-watchdog-hook@.service"
    text = runner.read_text()
    for line in (
        "ExecStart=/usr/bin/kvm-watchdog hook-runner",
        "StandardInput=socket",
        "CapabilityBoundingSet=",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    ):
        assert line in text.splitlines(), line
    assert socket_activated("kvm-watchdog-hook", tmp_path) <= 2.0, "root with the network, and little else"
    for name in ("kvm-watchdog-hook.socket", "kvm-watchdog-hook@.service"):
        assert os.readlink(REPO / "packaging" / "debian" / f"kvm-watchdog.{name}") == f"../systemd/{name}"
        installed, _, listed = (REPO / "packaging" / "rpm" / "kvm-watchdog.spec").read_text().partition("\n%files")
        assert f"%{{buildroot}}%{{_unitdir}}/{name}\n" in installed and f"\n%{{_unitdir}}/{name}\n" in listed, name


PULLING = re.compile(r"^(Wants|Requires|Requisite|BindsTo|PartOf|Upholds|Wants|Also)=.*\b(libvirtd|virtqemud)\b", re.M)


def test_the_unit_orders_after_libvirt_and_never_pulls_it_in_in_the_deb_and_the_rpm_alike() -> None:
    """A watchdog must not start what it watches: every start of it (boot, upgrade, restart) would start libvirt."""
    assert not PULLING.search(UNIT.read_text()), PULLING.search(UNIT.read_text())
    spec = (REPO / "packaging" / "rpm" / "kvm-watchdog.spec").read_text()
    assert "kvm-watchdog.service" in spec and not re.search(r"sed .*kvm-watchdog\.service", spec), (
        "the RPM installs the unit as it is"
    )
    assert not PULLING.search(spec)
    # build-deb lays packaging/debian out as the source tree's debian/: the link names systemd/ beside it
    assert os.readlink(REPO / "packaging" / "debian" / "kvm-watchdog.service") == "../systemd/kvm-watchdog.service", (
        "the .deb ships the same unit"
    )


def catalog_ids() -> List[str]:
    return re.findall(r"^-- ([0-9a-f]{32})$", CATALOG.read_text(), re.M)


def test_every_event_type_has_exactly_one_catalog_entry() -> None:
    ids = catalog_ids()
    assert sorted(ids) == sorted(MESSAGE_IDS.values())
    assert len(set(MESSAGE_IDS.values())) == len(MESSAGE_IDS), "one id per event type"


def test_journalctl_builds_the_catalog_and_explains_each_event(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib/systemd/catalog").mkdir(parents=True)
    shutil.copy(CATALOG, root / "usr/lib/systemd/catalog/kvm-watchdog.catalog")
    r = subprocess.run(["journalctl", f"--root={root}", "--update-catalog"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    listed = subprocess.run(
        ["journalctl", f"--root={root}", "--list-catalog"], capture_output=True, text=True, timeout=60
    ).stdout
    for kind, mid in MESSAGE_IDS.items():
        assert re.search(rf"^{mid} kvm-watchdog", listed, re.M), f"{kind} ({mid}) is not in the built catalog"
