"""The packages an operator installs: the .deb built with Debian's tooling and installed on this machine, the RPM spec.

Installs the .deb for real (dpkg, its Depends from apt), checks what an operator
would, and purges it again: nothing may be left but what the operator owns.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, List, Mapping

import pytest
from harness.journald import Journald
from harness.wait import wait_for

from watchdogd import __version__
from watchdogd.report.events import MESSAGE_IDS

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "packaging" / "rpm" / "kvm-watchdog.spec"
SYSTEM_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}

pytestmark = pytest.mark.skipif(
    not shutil.which("dpkg-buildpackage"), reason="Debian packaging tools are not installed (scripts/install-deps)"
)


@pytest.fixture(scope="module")
def deb(dist: Path) -> Path:
    [built] = dist.glob("kvm-watchdog_*_all.deb")
    return built


def deb_files(deb: Path) -> List[str]:
    r = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True)
    return [line.split()[-1].lstrip(".") for line in r.stdout.splitlines() if not line.startswith("d")]


def run(
    *argv: str, check: bool = True, env: Mapping[str, str] = SYSTEM_ENV, **kw: Any
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=600, env=env, check=False, **kw)
    if check:
        assert r.returncode == 0, f"{argv} exited {r.returncode}: {r.stderr[-2000:]}"
    return r


def test_the_deb_is_named_for_its_version_and_lintian_finds_no_error(deb: Path) -> None:
    assert deb.name == f"kvm-watchdog_{__version__}_all.deb"
    depends = run("dpkg-deb", "-f", str(deb), "Depends").stdout
    for dep in ("python3-libvirt", "python3-systemd", "python3-yaml"):
        assert dep in depends
    assert "psutil" not in depends, "the daemon reads /proc itself; psutil is for the bench and the tests"
    if not shutil.which("lintian"):
        pytest.skip("lintian is not installed")
    r = run("lintian", "--tag-display-limit", "0", str(deb), check=False)
    errors = [line for line in r.stdout.splitlines() if line.startswith("E:")]
    assert errors == [], r.stdout


def test_installed_from_the_deb_it_works_and_a_purge_leaves_nothing_behind(deb: Path, journald: Journald) -> None:
    if run("dpkg-query", "-W", "-f=${Status}", "kvm-watchdog", check=False).stdout.startswith("install ok"):
        pytest.skip("kvm-watchdog is already installed on this machine; not ours to replace")
    run(
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        str(deb),
        env={**SYSTEM_ENV, "DEBIAN_FRONTEND": "noninteractive"},
    )
    installed = run("dpkg", "-L", "kvm-watchdog").stdout.split()
    try:
        stages = sorted(p.name for p in (REPO / "watchdogd").iterdir() if (p / "__init__.py").exists())
        assert stages == ["act", "config", "decide", "diagnose", "observe", "report", "service"], (
            "the stages and the config package"
        )
        assert any(p.endswith("/watchdogd/diagnose/signatures.yaml") for p in installed), (
            "the signature table ships as data"
        )
        for stage in stages:
            assert any(p.endswith(f"/watchdogd/{stage}/__init__.py") for p in installed), (
                f"the .deb lacks watchdogd/{stage}"
            )
        for shared in (
            "kvm-watchdog-rules.yml",
            "kvm-watchdog-fleet.json",
            "kvm-watchdog-plugin-monitor.json",
            "hooks/nova-compute",
            "hooks/kubernetes-node",
        ):
            assert f"/usr/share/kvm-watchdog/{shared}" in installed, f"the .deb ships {shared}"
        assert os.access("/usr/share/kvm-watchdog/hooks/nova-compute", os.X_OK), "a hook root may run as shipped"
        for helper_unit in ("kvm-watchdog-capture.socket", "kvm-watchdog-capture@.service"):
            assert any(p.endswith(f"/system/{helper_unit}") for p in installed), f"the .deb ships {helper_unit}"
        assert run("/usr/bin/kvm-watchdog", "--version").stdout.strip() == f"kvm-watchdog {__version__}"
        assert run("/usr/bin/kvm-watchdog", "config", "check").stdout.strip() == "/etc/kvm-watchdog/config.yaml: valid"
        assert "/etc/kvm-watchdog/config.yaml" in run("dpkg-query", "-W", "-f=${Conffiles}", "kvm-watchdog").stdout
        unit = next(p for p in installed if p.endswith("/system/kvm-watchdog.service"))
        r = run("systemd-analyze", "verify", unit, check=False)
        assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
        assert run("man", "-w", "kvm-watchdog").stdout.strip().endswith("kvm-watchdog.8.gz")
        assert run("man", "-w", "5", "kvm-watchdog.yaml").stdout.strip().endswith("kvm-watchdog.yaml.5.gz")
        listed = run("journalctl", "--list-catalog").stdout
        for mid in MESSAGE_IDS.values():
            assert mid in listed
        # and `journalctl -x` explains a real event with the catalog's text
        marker = uuid.uuid4().hex
        run(
            "logger",
            "--journald",
            input=f"MESSAGE_ID={MESSAGE_IDS['probe_hung']}\nMESSAGE=package test {marker}\nKVMWD_TEST={marker}\nSYSLOG_IDENTIFIER=kvm-watchdog-pkgtest\n",
        )
        explained = wait_for(
            lambda: (
                (out := run("journalctl", "-x", "--no-pager", f"KVMWD_TEST={marker}").stdout)
                and "capability probe" in out
                and out
            ),
            30,
            "the catalog text under the event",
        )
        assert "Subject: kvm-watchdog: capability probe" in explained or "kvm-watchdog: capability probe" in explained
    finally:
        os.makedirs("/var/lib/kvm-watchdog/quarantine/20261124T000000.000000Z", exist_ok=True)  # the operator's data
        Path("/var/lib/kvm-watchdog/status.json").write_text("{}")  # the watchdog's own state
        run("dpkg", "--purge", "kvm-watchdog")
    left = [p for p in deb_files(deb) if os.path.lexists(p)]
    assert left == []
    assert not os.path.exists("/etc/kvm-watchdog")
    assert not list(Path("/etc/systemd/system").rglob("kvm-watchdog*"))
    assert os.listdir("/var/lib/kvm-watchdog") == ["quarantine"], "only the quarantined caches, the operator's, stay"
    shutil.rmtree("/var/lib/kvm-watchdog")


@pytest.fixture(scope="module")
def rpm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not shutil.which("rpmbuild"):
        pytest.skip("rpmbuild is not installed (Debian's rpm package; scripts/install-deps)")
    out = tmp_path_factory.mktemp("rpms")
    r = subprocess.run([str(REPO / "scripts" / "build-rpm"), str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    [built] = out.glob("kvm-watchdog-*.noarch.rpm")
    return built


def rpm_query(rpm: Path, *args: str) -> str:
    return run("rpm", "-qp", *args, str(rpm)).stdout


def test_the_rpm_builds_and_carries_everything_the_deb_does(rpm: Path, deb: Path) -> None:
    """rpmbuild on the spec, for real; its payload: unit, catalog, man pages, the config as %config(noreplace), every subpackage."""
    assert rpm.name == f"kvm-watchdog-{__version__}-1.noarch.rpm", "one version: pyproject's"
    flags = {}
    for line in rpm_query(rpm, "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]").splitlines():
        flag, _, path = line.strip().rpartition(" ")
        flags[path] = flag
    files = set(flags)
    assert flags["/etc/kvm-watchdog/config.yaml"] == "cn", "the operator's config: %config(noreplace)"
    for path in (
        "/usr/bin/kvm-watchdog",
        "/usr/lib/systemd/system/kvm-watchdog.service",
        "/usr/lib/systemd/catalog/kvm-watchdog.catalog",
        "/var/lib/kvm-watchdog",
    ):
        assert path in files, path
    # rpm compresses them where its brp scripts run
    man_pages = {re.sub(r"\.gz$", "", p) for p in files if "/man/" in p}
    assert man_pages >= {"/usr/share/man/man8/kvm-watchdog.8", "/usr/share/man/man5/kvm-watchdog.yaml.5"}, man_pages
    modes = dict(
        line.split(" ", 1)[::-1] for line in rpm_query(rpm, "--qf", "[%{FILEMODES:perms} %{FILENAMES}\n]").splitlines()
    )
    assert modes["/var/lib/kvm-watchdog"] == "drwx------"
    package = sorted(
        p.split("/site-packages/", 1)[1]
        for p in files
        if "/site-packages/watchdogd/" in p and "__pycache__" not in p and not modes[p].startswith("d")
    )
    in_tree = sorted(
        str(p.relative_to(REPO))
        for p in (REPO / "watchdogd").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert package == in_tree, "the Python package with every subpackage and its signature data"
    assert "watchdogd/diagnose/signatures.yaml" in package
    # everything the .deb installs outside the Python package is in the RPM too (at RHEL's paths)
    for path in deb_files(deb):
        if "/dist-packages/" in path or path.startswith("/usr/share/doc/"):
            continue  # the module (above) and Debian's own doc files
        rpm_path = (
            path.replace("/lib/systemd/system/", "/usr/lib/systemd/system/") if path.startswith("/lib/") else path
        )
        assert rpm_path in files or re.sub(r"\.gz$", "", rpm_path) in files, f"{path} is in the .deb but not in the RPM"
    requires = rpm_query(rpm, "--requires")
    for dep in ("python3-libvirt", "python3-systemd", "python3-pyyaml"):
        assert re.search(rf"^{dep}$", requires, re.M), dep
    assert "psutil" not in requires
    scripts = rpm_query(rpm, "--scripts")
    assert "journalctl --update-catalog" in scripts and "kvm-watchdog.service" in scripts
    assert "restart" not in scripts.split("preuninstall", 1)[0], "installing never starts or restarts anything"
    assert not re.search(r"libvirtd|virtqemud", scripts), "the package's scripts never touch libvirt"


def test_the_rpm_spec_uses_the_rpm_macros_where_a_host_has_them() -> None:
    """On RHEL 9 the pyproject and systemd macros build it; here their fallbacks do: both spelled in the one spec."""
    spec = SPEC.read_text()
    for macro in (
        "%pyproject_wheel",
        "%pyproject_install",
        "%pyproject_save_files watchdogd",
        "%systemd_post kvm-watchdog.service",
        "%systemd_preun kvm-watchdog.service",
        "%systemd_postun_with_restart kvm-watchdog.service",
    ):
        assert macro in spec, macro
    for dep in ("python3-libvirt", "python3-systemd", "python3-pyyaml"):
        assert re.search(rf"^Requires:\s+{dep}$", spec, re.M), dep
