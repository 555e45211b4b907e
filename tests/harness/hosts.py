"""The hosts kvm-watchdog is tested on: one table, read by the image builders and by every host test.

What differs from host to host lives here and nowhere else: the image's recipe
(release, architecture, packages, extra build steps), how it boots (a container
under systemd-nspawn, or an emulated arm64 machine under qemu-system-aarch64),
which libvirt daemon owns the probes and its units, the emulator and the qemu
user, how the package goes in, and what the KVM self-test must answer there.
The tests are written once and take a `Host`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

CACHE = Path(os.environ.get("KVMWD_IMAGE_CACHE", "/var/cache/kvm-watchdog-test"))


@contextlib.contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """One builder of a cached thing at a time (CI builds the matrix images beside make test, which builds its
    own): the second waits, then finds it built."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


MIRROR = "http://deb.debian.org/debian"
BASE = ("systemd", "systemd-sysv", "dbus", "python3", "procps")
RUNTIME = (
    "libvirt-daemon-system",
    "libvirt-clients",
    "python3-libvirt",
    "python3-systemd",
    "python3-psutil",
    "python3-yaml",
    "man-db",
    "less",
)


@dataclass(frozen=True)
class Host:
    """One host of the matrix."""

    name: str
    release: str
    python: str  # the distro's python3, as `python3 --version` says it
    libvirt: str
    arch: str = "amd64"
    emulator_package: str = "qemu-system-x86"
    emulator: str = "/usr/bin/qemu-system-x86_64"
    extra_packages: Tuple[str, ...] = ()
    # libvirt's daemon that starts the probes: its unit, the units an operator enables, the ones masked
    daemon: str = "libvirtd"
    idle_timeout: Optional[int] = 120  # the --timeout the distro's own unit gives the daemon (None: it never idles out)
    enable: Tuple[str, ...] = ()
    mask: Tuple[str, ...] = ()
    # a step the image needs after its packages (a name the image builder knows), part of the recipe;
    # with `base`, the step runs on a copy of that host's image instead of a new one
    build_step: str = ""
    base: str = ""
    qemu_user: str = "libvirt-qemu"
    install: str = "deb"  # or "rpm": built on the host itself with its own Python (scripts/build-rpm)
    boot: str = "nspawn"  # or "qemu-aarch64" (emulated), "qemu-kvm-cgroup-v1" (an x86_64 VM, legacy cgroups)
    expected_selftest: Dict[str, str] = field(default_factory=dict)

    @property
    def packages(self) -> Tuple[str, ...]:
        return BASE + RUNTIME + (self.emulator_package,) + self.extra_packages

    @property
    def recipe(self) -> str:
        """Everything the image is made from: a change to any of it builds a new image."""
        base = HOSTS[self.base].recipe if self.base else ""
        step = BUILD_STEP_VERSIONS.get(self.build_step, "")
        layout = ("mask", *self.mask, "enable", *self.enable) if self.mask or self.enable else ()
        return " ".join((base, self.release, self.arch, *self.packages, self.build_step, step, *layout))

    @property
    def tag(self) -> str:
        return f"{self.name}-{hashlib.sha256(self.recipe.encode()).hexdigest()[:12]}"

    @property
    def qemu_owns_cache(self) -> bool:
        """libvirt before 7.8 makes /var/cache/libvirt/qemu the qemu user's (and re-chowns it at each start)."""
        return tuple(int(p) for p in self.libvirt.split(".")) < (7, 8)

    @property
    def args_file(self) -> Tuple[str, str]:
        """Where the daemon's own unit reads its arguments (`--timeout 120`) from, and the variable."""
        return f"/etc/default/{self.daemon}", f"{self.daemon.upper()}_ARGS"

    @property
    def emulator_wrapper(self) -> str:
        """Where the fault-injecting emulator goes: before /usr/bin on the daemon's PATH, named like the real one."""
        return "/usr/local/bin/" + self.emulator.rsplit("/", 1)[-1]


# bump a step's version when what it does changes: the images that use it are rebuilt
BUILD_STEP_VERSIONS = {"virtqemud": "2", "arm64-kernel": "2", "python37": "1", "nova": "1"}

HOSTS: Dict[str, Host] = {
    h.name: h
    for h in (
        Host("bookworm", "bookworm", python="3.11", libvirt="9.0"),
        Host("trixie", "trixie", python="3.13", libvirt="11.3"),
        # Debian 11: Python 3.9, libvirt 7.0 (its cache dir is the qemu user's), systemd 247
        Host("bullseye", "bullseye", python="3.9", libvirt="7.0", idle_timeout=None),
        # the RHEL 9 layout: the modular daemons only, libvirtd disabled and masked
        Host(
            "trixie-modular",
            "trixie",
            python="3.13",
            libvirt="11.3",
            daemon="virtqemud",
            enable=("virtqemud.socket", "virtqemud-ro.socket", "virtqemud-admin.socket", "virtlogd.socket"),
            mask=(
                "libvirtd.service",
                "libvirtd.socket",
                "libvirtd-ro.socket",
                "libvirtd-admin.socket",
                "libvirtd-tcp.socket",
                "libvirtd-tls.socket",
            ),
            build_step="virtqemud",
            base="trixie",
        ),
        # the incident's host class: arm64 whose GICv3 has no GICv2 compatibility, emulated
        Host(
            "bookworm-arm64",
            "bookworm",
            python="3.11",
            libvirt="9.0",
            arch="arm64",
            emulator_package="qemu-system-arm",
            emulator="/usr/bin/qemu-system-aarch64",
            extra_packages=("udev", "kmod", "linux-image-arm64", "initramfs-tools"),  # the shim: cross-compiled here
            build_step="arm64-kernel",
            boot="qemu-aarch64",
            # check -> "ok", the errno it fails with, or the value it answers
            expected_selftest={
                "KVM_GET_API_VERSION": "12",
                "KVM_CREATE_DEVICE_TEST vgic_v3": "ok",
                "KVM_CREATE_DEVICE_TEST vgic_v2": "ENODEV",
                "KVM_CAP_ARM_PMU_V3": "1",
            },
        ),
        # an OpenStack compute host: Debian 12's Zed nova (with keystone, glance, placement, MariaDB and RabbitMQ)
        # on the bookworm image, for the scheduler story (tests/test_nova.py)
        Host("bookworm-nova", "bookworm", python="3.11", libvirt="9.0", build_step="nova", base="bookworm"),
        # the incident's own host family, Kylin V10 / openEuler 20.03 LTS: Python 3.7 (/usr/bin/python3.7 with
        # PyYAML 5.3.1, python-systemd 234 and setuptools 44) running the daemon, systemd with cgroup v1 (legacy
        # hierarchy: name=systemd only), qemu.conf's user and group root (probes run as root), the emulator at
        # /usr/libexec/qemu-kvm, the RPM built there with that Python, and pidfd answering ENOSYS (4.19 has none).
        # An x86_64 VM (TCG), for systemd's cgroup v1 (nspawn shares this host's v2); Debian 12's libvirt 9.0.
        Host(
            "kylin-v10-like",
            "bookworm",
            python="3.7",
            libvirt="9.0",
            emulator="/usr/libexec/qemu-kvm",
            extra_packages=(
                "udev",
                "kmod",
                "linux-image-amd64",
                "initramfs-tools",
                "rpm",
                "gcc",
                "make",
                "libc6-dev",
                "pkg-config",
                "libssl-dev",
                "zlib1g-dev",
                "libffi-dev",
                "libbz2-dev",
                "liblzma-dev",
                "uuid-dev",
                "ca-certificates",
                "procps",
                "psmisc",
            ),  # fmt: skip
            build_step="python37",
            qemu_user="root",
            install="rpm",
            boot="qemu-kvm-cgroup-v1",
            idle_timeout=120,
        ),
    )
}

SYSTEM_HOSTS = ("bookworm", "trixie")  # make test
MATRIX_HOSTS = ("bullseye", "trixie-modular", "bookworm-arm64", "kylin-v10-like")  # make matrix
NOVA_HOST = "bookworm-nova"  # make matrix: the scheduler story (not the system story: its own)
