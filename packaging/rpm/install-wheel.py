"""Install a wheel into an RPM buildroot with the prefix scheme: the spec's fallback for %pyproject_install.

Where the pyproject RPM macros are missing (rpmbuild from Debian's rpm package), pip and
python-installer would take the host's default scheme (Debian's: /usr/local/...); an RPM's
payload wants the prefix's own site-packages, as RHEL's python3 has it.

Usage: install-wheel.py WHEEL BUILDROOT PREFIX INTERPRETER
"""

import sys
import sysconfig

from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile


def main(wheel: str, buildroot: str, prefix: str, interpreter: str) -> None:
    paths = sysconfig.get_paths("posix_prefix", vars={"base": prefix, "platbase": prefix})
    scheme = {
        "purelib": paths["purelib"],
        "platlib": paths["platlib"],
        "headers": paths["include"],
        "scripts": paths["scripts"],
        "data": paths["data"],
    }
    dest = SchemeDictionaryDestination(
        scheme, interpreter=interpreter, script_kind="posix", destdir=buildroot, bytecode_optimization_levels=()
    )
    with WheelFile.open(wheel) as source:
        install(source, dest, {"INSTALLER": b"rpm"})


if __name__ == "__main__":
    main(*sys.argv[1:5])
