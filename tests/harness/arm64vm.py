"""An emulated arm64 KVM host: a Debian arm64 image booted by qemu-system-aarch64 (TCG) at EL2 with a GICv3.

`-M virt,virtualization=on,gic-version=3 -cpu max`: the guest kernel starts at EL2 and
runs KVM itself, and its GICv3 has no GICV resource, so KVM disables GICv2 emulation:
the incident's host class (a Kunpeng 920), for real, on an x86_64 machine.

- The image is built once with mmdebstrap and qemu-user-static (binfmt_misc is mounted
  and qemu-aarch64 registered first: this machine kind mounts neither), then cached as
  a raw ext4 root, its kernel and its initrd. Each boot writes to a qcow2 overlay, so
  the image stays pristine.
- A job is a directory shared over virtio-9p: the image's `kvmwd-job.service` mounts it,
  runs its `run` (stdout and stderr to `out.log`, the exit status to `rc`) and powers off.

Usage (to build the image ahead of time): python -m harness.arm64vm build
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Optional

from .hosts import CACHE, HOSTS, MIRROR, Host

BINFMT = Path("/proc/sys/fs/binfmt_misc")
JOB_UNIT = """\
[Unit]
Description=kvm-watchdog test job from the host (virtio-9p tag "job")
After=multi-user.target

[Service]
Type=oneshot
StandardOutput=journal+console
ExecStart=/bin/sh -c 'mkdir -p /mnt/job && mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 job /mnt/job && cd /mnt/job && ./run > out.log 2>&1; echo $? > rc; sync'
ExecStartPost=/bin/systemctl --no-block poweroff

[Install]
WantedBy=multi-user.target
"""
KVM_RULE = 'KERNEL=="kvm", GROUP="kvm", MODE="0660"\n'


def register_binfmt(log: IO[str]) -> None:
    """Mount binfmt_misc and register qemu-aarch64 (with its fix-binary flag, so chroots need no copy of it)."""
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=True)
    if not (BINFMT / "qemu-aarch64").exists():
        line = Path("/usr/lib/binfmt.d/qemu-aarch64.conf").read_text().strip()
        (BINFMT / "register").write_text(line)
    print("binfmt: qemu-aarch64 registered", file=log)


def image_dir(host: Host) -> Path:
    return CACHE / host.tag


def ensure_image(host: Host = HOSTS["bookworm-arm64"], log: IO[str] = sys.stderr) -> Path:
    """The cached arm64 image (root.img, vmlinuz, initrd.img), built first if it is not there (about 25 minutes, once)."""
    final = image_dir(host)
    if (final / "root.img").exists():
        return final
    register_binfmt(log)
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="building-", dir=CACHE))
    root = work / "root"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
    try:
        hooks = [
            "--customize-hook=echo 'kvmwd-arm64' > $1/etc/hostname",
            "--customize-hook=echo '/dev/vda / ext4 defaults 0 1' > $1/etc/fstab",
            "--customize-hook=rm -f $1/etc/systemd/system/getty.target.wants/*",
        ]
        subprocess.run(
            [
                "mmdebstrap",
                f"--architectures={host.arch}",
                "--variant=apt",
                f"--include={','.join(host.packages)}",
                *hooks,
                host.release,
                str(root),
                MIRROR,
            ],
            check=True,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        unit = root / "etc/systemd/system/kvmwd-job.service"
        unit.write_text(JOB_UNIT)
        (root / "etc/systemd/system/multi-user.target.wants/kvmwd-job.service").symlink_to(
            "/etc/systemd/system/kvmwd-job.service"
        )
        (root / "etc/udev/rules.d").mkdir(parents=True, exist_ok=True)
        (root / "etc/udev/rules.d/65-kvm.rules").write_text(KVM_RULE)
        for name in ("vmlinuz", "initrd.img"):  # links at the image's /, read inside the image (never the host's /boot)
            link = root / name
            shutil.copyfile(root / os.readlink(link).lstrip("/") if link.is_symlink() else link, work / name)
        shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
        (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
        used = int(
            subprocess.run(["du", "-sxm", str(root)], capture_output=True, text=True, check=True).stdout.split()[0]
        )
        subprocess.run(
            ["mkfs.ext4", "-q", "-L", "root", "-d", str(root), str(work / "root.img"), f"{used + 2048}M"],
            check=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        shutil.rmtree(root)
        work.rename(final)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return final


class Arm64Machine:
    """One boot of the image: a job dir in, its out.log and rc back."""

    def __init__(self, image: Path, workdir: Path):
        self.image = image
        self.workdir = workdir
        self.job = workdir / "job"
        self.job.mkdir(parents=True, exist_ok=True)
        self.console = workdir / "console.log"

    def run_job(self, script: str, timeout: float = 1800) -> JobResult:
        """Boot, run `script` (a shell script) inside as root, power off; the console and the job's output."""
        run = self.job / "run"
        run.write_text("#!/bin/sh\nset -u\n" + script)
        run.chmod(0o755)
        for name in ("rc", "out.log"):
            (self.job / name).unlink(missing_ok=True)
        overlay = self.workdir / "overlay.qcow2"
        overlay.unlink(missing_ok=True)
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(self.image / "root.img"), "-F", "raw", str(overlay)],
            check=True,
        )
        argv = [
            "qemu-system-aarch64", "-M", "virt,virtualization=on,gic-version=3", "-cpu", "max", "-smp", "2", "-m", "2048",
            "-nographic", "-no-reboot", "-nic", "none",
            "-kernel", str(self.image / "vmlinuz"), "-initrd", str(self.image / "initrd.img"),
            "-append", "console=ttyAMA0 root=/dev/vda rw quiet systemd.show_status=0",
            "-drive", f"file={overlay},if=virtio,format=qcow2",
            "-virtfs", f"local,path={self.job},mount_tag=job,security_model=none,id=job",
        ]  # fmt: skip
        started = time.monotonic()
        with open(self.console, "wb") as console:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
                raise AssertionError(
                    f"the arm64 machine did not power off in {timeout:.0f}s: {self.console_text()[-3000:]}"
                ) from None
        overlay.unlink(missing_ok=True)
        rc: Optional[int] = int((self.job / "rc").read_text().strip()) if (self.job / "rc").exists() else None
        out = (self.job / "out.log").read_text(errors="replace") if (self.job / "out.log").exists() else ""
        return JobResult(rc, out, self.console_text(), time.monotonic() - started)

    def console_text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""


class JobResult:
    def __init__(self, rc: Optional[int], out: str, console: str, seconds: float):
        self.rc, self.out, self.console, self.seconds = rc, out, console, seconds


if __name__ == "__main__":
    if sys.argv[1:2] == ["build"]:
        print(ensure_image())
    else:
        sys.stderr.write(__doc__ or "")
        sys.exit(2)
