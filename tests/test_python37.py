"""The incident's own Python: Kylin V10 and openEuler 20.03 LTS ship 3.7, with PyYAML 5.3.1 and python-systemd 234.

An operator there runs `pip install .` with the distro's python3.7 and its libraries (or the RPM built for
it), then the console script. Each step below is that, on a real CPython 3.7.4 built from shared/py37.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
from harness.py37 import BUILDER, ensure_python37

from watchdogd import __version__

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.py37


def run(argv: List[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, cwd=str(cwd), timeout=timeout)
    assert r.returncode == 0, f"{' '.join(argv)} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def python37() -> Path:
    if not BUILDER.exists() and not os.environ.get("CI"):
        pytest.skip(f"no CPython 3.7 source beside the repo ({BUILDER}): the 3.7 lane needs shared/py37")
    return ensure_python37()


@pytest.fixture(scope="module")
def venv37(python37: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip install .` into a venv of the distro's python3.7 that sees its site-packages, as a host's pip would."""
    venv = tmp_path_factory.mktemp("py37") / "venv"
    work = venv.parent
    # its pip is the distro python's (one that still reaches PyPI from 3.7.4), not the venv's bundled 19.0
    run([str(python37), "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], work)
    run([str(venv / "bin/python"), "-m", "pip", "install", "-q", f"{REPO}[unit]"], work)
    return venv


def test_pip_install_works_on_python_3_7_and_the_console_script_says_its_version(venv37: Path) -> None:
    py = str(venv37 / "bin/python")
    assert run([py, "-c", "import platform; print(platform.python_version())"], venv37).stdout.strip() == "3.7.4"
    libs = run([py, "-m", "pip", "list", "--format=freeze"], venv37).stdout
    assert "PyYAML==5.3.1" in libs and "systemd-python==234" in libs, "openEuler 20.03's own library versions"
    assert re.search(r"^libvirt-python==(\d+)\.(\d+)", libs, re.M), "libvirt-python < 12.6 built for 3.7"
    out = run([str(venv37 / "bin/kvm-watchdog"), "--version"], venv37).stdout.strip()
    assert out == f"kvm-watchdog {__version__}"


def test_every_module_of_the_installed_package_compiles_and_imports_on_python_3_7(venv37: Path) -> None:
    out = run([str(venv37 / "bin/python"), str(REPO / "tests/harness/import_all.py")], venv37).stdout.split()
    version, modules = out[0], int(out[1])
    assert version == "3.7.4" and modules > 60


def test_make_units_tests_pass_on_python_3_7(venv37: Path) -> None:
    """The fast lane (tests/unit and the doctests) under 3.7: what make unit runs, as a user without root."""
    r = subprocess.run(
        [str(venv37 / "bin/python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit", "watchdogd"],
        capture_output=True,
        text=True,
        cwd=str(REPO),
        timeout=300,
    )
    tail = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-2000:]
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    passed = re.search(r"(\d+) passed", tail)
    assert passed and int(passed.group(1)) >= 74 and "failed" not in tail, tail
    print(f"make unit on Python 3.7.4: {tail}", file=sys.stderr)


def test_the_rpm_builds_for_python_3_7_with_setuptools_44_and_no_pyproject_macros(
    python37: Path, tmp_path: Path
) -> None:
    """openEuler 20.03 has rpm 4.15, setuptools 44 and no pyproject macros: the spec's fallback builds it there."""
    setuptools = run([str(python37), "-c", "import setuptools; print(setuptools.__version__)"], tmp_path).stdout
    assert setuptools.startswith("44."), setuptools
    env = dict(os.environ, PYTHON=str(python37))
    r = subprocess.run(
        [str(REPO / "scripts/build-rpm"), str(tmp_path)], capture_output=True, text=True, env=env, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    [built] = tmp_path.glob("kvm-watchdog-*.noarch.rpm")
    files = run(["rpm", "-qpl", str(built)], tmp_path).stdout.splitlines()
    site = "/usr/lib/python3.7/site-packages"
    assert f"{site}/watchdogd/__init__.py" in files and f"{site}/watchdogd/diagnose/signatures.yaml" in files
    assert f"{site}/kvm_watchdog-{__version__}-py3.7.egg-info/PKG-INFO" in files, "named and versioned, not UNKNOWN"
    assert not [f for f in files if "/python3." in f and not f.startswith(site)], "nothing for another Python"
    requires = run(["rpm", "-qp", "--requires", str(built)], tmp_path).stdout.splitlines()
    assert "python(abi) = 3.7" in requires
    payload = tmp_path / "payload"
    payload.mkdir()
    subprocess.run(f"rpm2archive - < {built} | tar -C {payload} -xzf -", shell=True, check=True)
    launcher = (payload / "usr/bin/kvm-watchdog").read_text().splitlines()
    assert launcher[0] == f"#!{python37} -s", "the command runs the Python it was built for"
