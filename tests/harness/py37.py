"""Python 3.7 as Kylin V10 and openEuler 20.03 LTS ship it: CPython 3.7.4, PyYAML 5.3.1, python-systemd 234 and
setuptools 44, for the lane that runs the package, its CLI and its fast tests on the incident's own Python.

Debian has no 3.7 and PyPI no interpreter: it is built once from the source tree in shared/py37 (about two
minutes), at its final prefix in the image cache (a CPython install is not relocatable), with the library
versions those distros ship put into its own site-packages, as the distro's RPMs put them.

Usage (to build it ahead of time): python -m harness.py37
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO, Tuple

from .chroot import in_chroot
from .hosts import CACHE, cache_lock

SHARED = Path(os.environ.get("KVMWD_SHARED", Path(__file__).resolve().parents[3] / "shared"))
BUILDER = SHARED / "py37" / "build-python37"
# what openEuler 20.03 LTS ships (python3-pyyaml, python3-systemd, python3-setuptools), and the pip that can
# still reach PyPI from 3.7.4's ssl module (3.7.4's own pip 19.0 cannot)
OPENEULER_LIBS: Tuple[str, ...] = ("PyYAML==5.3.1", "systemd-python==234", "setuptools==44.1.1")
PIP = "pip<24.1"


def prefix() -> Path:
    """Where the interpreter lives: named for what it is made of, so a change builds a new one."""
    recipe = " ".join((BUILDER.name, PIP, *OPENEULER_LIBS))
    return CACHE / f"python-3.7.4-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def ensure_python37(log: IO[str] = sys.stderr) -> Path:
    """The cached python3.7 (built first if it is not there): its path."""
    with cache_lock(prefix().name):
        return _ensure_python37(log)


def _ensure_python37(log: IO[str]) -> Path:
    where = prefix()
    python = where / "bin" / "python3.7"
    if (where / ".complete").exists():
        return python
    if not BUILDER.exists():
        raise FileNotFoundError(f"no CPython 3.7 builder at {BUILDER} (set KVMWD_SHARED to the shared/ dir)")
    shutil.rmtree(where, ignore_errors=True)  # a build that was cut short
    CACHE.mkdir(parents=True, exist_ok=True)
    try:
        for argv in (
            [str(BUILDER), str(where)],
            [str(python), "-m", "pip", "install", "-q", "--upgrade", "--no-warn-script-location", PIP],
            [str(python), "-m", "pip", "install", "-q", "--no-warn-script-location", *OPENEULER_LIBS],
        ):
            subprocess.run(argv, check=True, stdout=log, stderr=subprocess.STDOUT, timeout=1200)
    except BaseException:
        shutil.rmtree(where, ignore_errors=True)
        raise
    (where / ".complete").touch()
    return python


if __name__ == "__main__":
    print(ensure_python37())


# the image's own python3.7, as the distro installs it: prefix /usr (site-packages /usr/lib/python3.7/site-packages,
# where an RPM built for it puts the package), beside Debian's python3, which stays the image's /usr/bin/python3
IMAGE_BUILD = r"""
set -eu
cd /tmp/py37/*/
./configure --prefix=/usr --with-ensurepip=install > /tmp/py37.log 2>&1 || {{ tail -30 /tmp/py37.log; exit 1; }}
make -j2 >> /tmp/py37.log 2>&1 || {{ tail -30 /tmp/py37.log; exit 1; }}
make altinstall >> /tmp/py37.log 2>&1 || {{ tail -30 /tmp/py37.log; exit 1; }}
cd / && rm -rf /tmp/py37 /tmp/py37.log
python3.7 -m pip install -q --upgrade --no-index --find-links /tmp/wheelhouse "{pip}"
python3.7 -m pip install -q --no-index --find-links /tmp/wheelhouse {libs}
rm -rf /tmp/wheelhouse /root/.cache/pip
python3.7 -c 'import ssl, ctypes, yaml, systemd.journal, libvirt; print("python3.7 in the image:", yaml.__version__)'
"""
IMAGE_LIBVIRT_PYTHON = "libvirt-python==9.0.0"  # the image's libvirt is 9.0 (openEuler 20.03's python3-libvirt: 6.2)


def build_in_image(root: Path, log: IO[str]) -> None:
    """The image's /usr/bin/python3.7 with openEuler's library versions: CPython built in the image's chroot from
    shared/py37, its libraries as wheels built here by the cached 3.7 (the chroot reaches no package index)."""
    python = ensure_python37(log)
    wheelhouse = root / "tmp" / "wheelhouse"
    wheelhouse.mkdir(parents=True, exist_ok=True)
    libs = (*OPENEULER_LIBS, IMAGE_LIBVIRT_PYTHON)
    subprocess.run(
        [str(python), "-m", "pip", "wheel", "-q", "-w", str(wheelhouse), PIP, *libs],
        check=True,
        stdout=log,
        stderr=subprocess.STDOUT,
        timeout=1200,
    )
    source = root / "tmp" / "py37"  # unpacked here: the image has no xz
    source.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-xJf", str(BUILDER.parent / "cpython-3.7.4-tree.tar.xz"), "-C", str(source)], check=True)
    in_chroot(root, IMAGE_BUILD.format(pip=PIP, libs=" ".join(f"'{lib}'" for lib in libs)), log)
