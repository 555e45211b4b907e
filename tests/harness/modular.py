"""libvirt's modular daemons on Debian: `virtqemud` and its units, built from Debian's own libvirt source package.

Debian builds the split daemons but does not ship them (its `debian/not-installed`);
RHEL 9 and openEuler 22.03+ run only them. So the image's own libvirt source, at the
very version its libvirt0 and QEMU driver module are, is unpacked with Debian's patches, configured with Debian's flags
(`debian/rules override_dh_auto_configure`) in a throw-away copy of the image with the
build dependencies, and only the `virtqemud` target is built; the binary, its systemd
units and its config then go into the image where Debian would have put them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import IO

from .chroot import in_chroot

BUILD = r"""
set -eu
. /etc/os-release
echo "deb-src http://deb.debian.org/debian $VERSION_CODENAME main" > /etc/apt/sources.list.d/kvmwd-src.list
apt-get update -q
apt-get build-dep -y -q --no-install-recommends libvirt
apt-get install -y -q --no-install-recommends dpkg-dev fakeroot
mkdir -p /build && cd /build
# the registry serves the source tarballs but not every .dsc: fetch the tarballs, unpack, patch
apt-get source --print-uris -q libvirt | grep "^'" | grep -v "\.dsc' \|\.asc' " | while read -r uri name _; do
  python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$(echo "$uri" | tr -d "'")" "$name"
done
mkdir src
tar -xf libvirt_*.orig.tar.xz -C src --strip-components=1
tar -xf libvirt_*.debian.tar.xz -C src
cd src
grep -v '^#' debian/patches/series | while read -r patch opts; do [ -n "$patch" ] && patch -s ${opts:--p1} < "debian/patches/$patch"; done
debian/rules override_dh_auto_configure
obj=$(ls -d obj-*)
ninja -C "$obj" src/virtqemud
mkdir -p /out
cp "$obj/src/virtqemud" /out/
find "$obj/src" -maxdepth 1 -name 'virtqemud*.service' -o -maxdepth 1 -name 'virtqemud*.socket' | xargs -r cp -t /out/
find "$obj" -name virtqemud.conf -type f | head -1 | xargs -r -I{} cp {} /out/
ls -l /out
"""


def build_virtqemud(root: Path, log: IO[str]) -> None:
    """Build virtqemud for the image at `root` and install it, its units and its config there."""
    builder = root.parent / (root.name + "-virtqemud-builder")
    subprocess.run(["cp", "-a", "--reflink=auto", str(root), str(builder)], check=True)
    try:
        in_chroot(builder, BUILD, log)
        out = builder / "out"
        shutil.copy2(out / "virtqemud", root / "usr/sbin/virtqemud")
        units = sorted(p for p in out.iterdir() if p.suffix in (".service", ".socket"))
        assert any(p.name == "virtqemud.service" for p in units), f"no virtqemud.service among {units}"
        for unit in units:
            shutil.copy2(unit, root / "lib/systemd/system" / unit.name)
        if (out / "virtqemud.conf").exists():
            shutil.copy2(out / "virtqemud.conf", root / "etc/libvirt/virtqemud.conf")
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(builder)], check=False)
