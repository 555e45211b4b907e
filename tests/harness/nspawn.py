"""A real systemd, for the acceptance test: a Debian 12 (bookworm) or 13 (trixie) container booted with systemd-nspawn.

- The image is debootstrapped once, with libvirt and the package's Depends in it,
  and cached (built in a temp dir, renamed into place when whole); each boot uses
  `--volatile=overlay`, so the image stays pristine.
- The host has no systemd PID 1: nspawn runs with `--register=no --keep-unit`,
  from a private cgroup of ours that is emptied (by PID, only what is in it) and
  removed after.
- Commands run inside through `nsenter -t <its PID 1> -a` with a clean `env -i`.
- Power off with SIGRTMIN+4 to its PID 1; nspawn stays a child of the test (PID 1
  here reaps nothing).

Usage (to build the images ahead of time): python -m harness.nspawn build [HOST...]  (names from harness.hosts)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, Callable, Dict, List, Optional, Sequence, Set, Tuple

from .chroot import CHROOT_ENV, in_chroot
from .hosts import BASE, CACHE, HOSTS, MIRROR, SYSTEM_HOSTS, Host, cache_lock
from .modular import build_virtqemud
from .openstack import build_nova
from .py37 import build_in_image as build_python37
from .wait import wait_for

BUILD_STEPS: Dict[str, Callable[[Path, IO[str]], None]] = {
    "virtqemud": build_virtqemud,
    "python37": build_python37,
    "nova": build_nova,
}

CGROUP_TREES = ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified")
INNER_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def image_dir(host: Host) -> Path:
    return CACHE / host.tag


def ensure_image(host: Host, log: IO[str] = sys.stderr) -> Path:
    """The cached image of a host of the table, debootstrapped first if it is not there yet (several minutes, once)."""
    with cache_lock(host.tag):
        return _ensure_image(host, log)


def _ensure_image(host: Host, log: IO[str]) -> Path:
    final = image_dir(host)
    if (final / "etc" / "os-release").exists():
        return final
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="building-", dir=CACHE))
    work.chmod(0o755)  # it becomes a system's /
    try:
        if host.base:  # the base host's image, copied: its packages are this one's
            work.rmdir()
            subprocess.run(
                ["cp", "-a", "--reflink=auto", str(ensure_image(HOSTS[host.base], log)), str(work)], check=True
            )
        else:
            # two steps: debootstrap's own configure pass cannot set up polkitd (libvirt's
            # dependency); apt in a chroot with /proc, /sys and /dev can, services kept from starting
            subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(BASE)}", host.release, str(work), MIRROR],
                check=True,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=CHROOT_ENV,
            )
        policy = work / "usr" / "sbin" / "policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        if not host.base:
            in_chroot(
                work,
                f"apt-get update -q && apt-get install -y -q --no-install-recommends {' '.join(host.packages)} && apt-get clean",
                log,
            )
        if host.build_step:
            BUILD_STEPS[host.build_step](work, log)
        # the host's libvirt layout, as its operator sets it up (libvirt's docs/daemons.rst for the modular one)
        for verb, units in (("mask", host.mask), ("enable", host.enable)):
            if units:
                subprocess.run(
                    ["systemctl", f"--root={work}", verb, *units], check=True, stdout=log, stderr=subprocess.STDOUT
                )
        policy.unlink()
        (work / "etc" / "hostname").write_text("kvmwd-systest\n")
        # only what the test needs: no getty on a console nobody reads
        for unit in ("getty@tty1.service", "console-getty.service"):
            link = work / "etc" / "systemd" / "system" / "getty.target.wants" / unit
            if link.is_symlink():
                link.unlink()
        shutil.rmtree(work / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        (work / "var" / "cache" / "apt" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        work.rename(final)
    finally:
        if work.exists():
            if mounts_below(work):  # never walk into a bind of the host's /dev or /sys
                raise RuntimeError(
                    f"{work} still has mounts below it: {mounts_below(work)}; left for a person to look at"
                )
            shutil.rmtree(work, ignore_errors=True)
    return final


def mounts_below(path: Path) -> List[str]:
    prefix = str(path).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        return [fields[4] for fields in (line.split() for line in f) if fields[4].startswith(prefix)]


class Container:
    def __init__(
        self,
        image: Path,
        binds_ro: Sequence[Tuple[str, str]] = (),
        workdir: Optional[Path] = None,
        private_network: bool = False,
    ):
        """private_network: a loopback of its own (services that listen, such as OpenStack's, touch no host port)."""
        self.image = image
        self.binds_ro = list(binds_ro)
        self.private_network = private_network
        self.name = f"kvmwd-{uuid.uuid4().hex[:8]}"
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="kvmwd-nspawn-"))
        self.log_path = self.workdir / "nspawn.log"
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.pid1: Optional[int] = None
        self.cgroups: List[Path] = []

    # ---- the private cgroup -------------------------------------------------------------
    def _make_cgroups(self) -> None:
        for tree in CGROUP_TREES:
            if os.path.isdir(tree):
                path = Path(tree) / self.name
                path.mkdir()
                self.cgroups.append(path)

    def _cgroup_pids(self) -> List[int]:
        pids: Set[int] = set()
        for path in self.cgroups:
            for procs in path.rglob("cgroup.procs"):
                try:
                    pids.update(int(x) for x in procs.read_text().split())
                except OSError:
                    pass
        return sorted(pids)

    def _remove_cgroups(self) -> None:
        for path in self.cgroups:
            for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                try:
                    sub.rmdir()
                except OSError:
                    pass
            try:
                path.rmdir()
            except OSError:
                pass
        self.cgroups = []

    # ---- life cycle --------------------------------------------------------------------
    def boot(self, timeout: float = 120) -> Container:
        self._make_cgroups()
        argv = [
            "systemd-nspawn",
            "-D",
            str(self.image),
            "--volatile=overlay",
            "--register=no",
            "--keep-unit",
            "-b",
            f"--machine={self.name}",
            "--console=passive",
        ]
        argv += [f"--bind-ro={src}:{dst}" for src, dst in self.binds_ro]
        argv += ["--private-network"] if self.private_network else []
        # a shell moves itself into our cgroups, then becomes nspawn (no preexec_fn: the test runs threads)
        enter = " ".join(f"echo $$ > '{path}/cgroup.procs' &&" for path in self.cgroups)
        argv = ["/bin/sh", "-c", f'{enter} exec "$@"', "sh", *argv]
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.pid1 = wait_for(self._find_pid1, timeout, "the container's PID 1")
        state = wait_for(
            lambda: self._state() in ("running", "degraded") and self._state(),
            timeout,
            "systemctl is-system-running: running or degraded",
        )
        assert state
        return self

    def _find_pid1(self) -> Optional[int]:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"systemd-nspawn exited {self.proc.returncode}: {self.log_path.read_text(errors='replace')[-2000:]}"
            )
        for pid in self._cgroup_pids():
            try:
                with open(f"/proc/{pid}/status") as f:
                    nspid = next((line.split()[1:] for line in f if line.startswith("NSpid:")), [])
            except OSError:
                continue
            if len(nspid) >= 2 and nspid[-1] == "1":
                return pid
        return None

    def _state(self) -> str:
        return self.run("systemctl is-system-running", timeout=30).stdout.strip()

    def run(self, command: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess[str]:
        assert self.pid1 is not None
        argv = [
            "nsenter",
            "-t",
            str(self.pid1),
            "-a",
            "env",
            "-i",
            INNER_PATH,
            "LANG=C.UTF-8",
            "/bin/sh",
            "-c",
            command,
        ]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check:
            assert r.returncode == 0, (
                f"in the container, `{command}` exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
            )
        return r

    def poweroff(self, timeout: float = 60) -> None:
        if self.proc is None:
            return
        if self.pid1 is not None and self.proc.poll() is None:
            try:
                os.kill(self.pid1, signal.SIGRTMIN + 4)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for pid in self._cgroup_pids():  # only what is in our own cgroup: ours
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while self._cgroup_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._remove_cgroups()
        self.proc = None


if __name__ == "__main__":
    if sys.argv[1:2] == ["build"]:
        for name in sys.argv[2:] or SYSTEM_HOSTS:
            print(ensure_image(HOSTS[name]))
    else:
        sys.stderr.write(__doc__ or "")
        sys.exit(2)
