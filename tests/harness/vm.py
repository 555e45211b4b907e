"""The hosts of the table that boot as a whole machine under QEMU, each job run at boot and the machine powered off.

- `qemu-aarch64`: an emulated arm64 KVM host, a Debian arm64 image booted by
  qemu-system-aarch64 (TCG) with `-M virt,virtualization=on,gic-version=3 -cpu max`: the
  guest kernel starts at EL2 and runs KVM itself, and its GICv3 has no GICV resource, so KVM
  disables GICv2 emulation: the incident's host class (a Kunpeng 920), for real, on an
  x86_64 machine. Its image is built once with mmdebstrap and qemu-user-static (binfmt_misc
  is mounted and qemu-aarch64 registered first: this machine kind mounts neither).
- `qemu-kvm-cgroup-v1`: an x86_64 VM (TCG: see boot_argv) whose systemd runs the legacy cgroup v1
  hierarchy (`systemd.unified_cgroup_hierarchy=0 systemd.legacy_systemd_cgroup_controller=1`),
  as Kylin V10 and openEuler 20.03 do; nspawn containers share this machine's v2. Its root is
  the host's debootstrapped image (harness/nspawn.py, with its build step), made a disk.

Each image is cached as a raw ext4 root, its kernel and its initrd; each boot writes to a
qcow2 overlay, so the image stays pristine. A job is a directory shared over virtio-9p: the
image's `kvmwd-job.service` mounts it, runs its `run` (stdout and stderr to `out.log`, the
exit status to `rc`) and powers off.

Usage (to build an image ahead of time): python -m harness.vm build [HOST]
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Optional, Sequence

from .hosts import CACHE, HOSTS, MIRROR, Host, cache_lock
from .nspawn import ensure_image as ensure_root_dir

HERE = Path(__file__).resolve().parent
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
# what the arm64 machine's initramfs loads to mount its root: the virtio-blk disk on the virt machine's PCI bus,
# ext4 and the checksum ext4 asks for by name (Debian's arm64 kernel builds all four as modules)
ROOT_MODULES = ("virtio_pci", "virtio_blk", "ext4", "crc32c_generic")


def register_binfmt(log: IO[str]) -> None:
    """Mount binfmt_misc and register qemu-aarch64 (with its fix-binary flag, so chroots need no copy of it)."""
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=True)
    if not (BINFMT / "qemu-aarch64").exists():
        line = Path("/usr/lib/binfmt.d/qemu-aarch64.conf").read_text().strip()
        (BINFMT / "register").write_text(line)
    print("binfmt: qemu-aarch64 registered", file=log)


def image_dir(host: Host) -> Path:
    return CACHE / (host.tag if host.boot == "qemu-aarch64" else f"{host.tag}-disk")


def ensure_image(host: Host = HOSTS["bookworm-arm64"], log: IO[str] = sys.stderr) -> Path:
    """The cached machine image (root.img, vmlinuz, initrd.img), built first if it is not there (arm64: about 5
    minutes alone, once; x86_64: the debootstrapped image and its build step, then a minute)."""
    with cache_lock(image_dir(host).name):
        return _ensure_image(host, log)


def _ensure_image(host: Host, log: IO[str]) -> Path:
    final = image_dir(host)
    if (final / "root.img").exists():
        return final
    if host.boot != "qemu-aarch64":
        return disk_from_dir(host, final, log)
    register_binfmt(log)
    with building(final) as work:
        root = work / "root"
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
        # every step of the build runs emulated (dpkg, maintainer scripts, the initramfs): docs, man pages and
        # translations are never written, so never unpacked nor indexed by man-db (the arm64 job reads none), and
        # the initramfs holds only what mounts the virt machine's root (MODULES=list: MODULES=most's hundreds of
        # modules, each copied by an emulated shell, were most of the build)
        slim = [f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("man", "doc", "locale", "info")]
        hooks = [
            "--essential-hook=mkdir -p $1/etc/initramfs-tools/conf.d $1/usr/share/initramfs-tools/modules.d",
            "--essential-hook=echo MODULES=list > $1/etc/initramfs-tools/conf.d/kvmwd",
            f"--essential-hook=printf '%s\\n' {' '.join(ROOT_MODULES)} > $1/usr/share/initramfs-tools/modules.d/kvmwd",
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
                *slim,
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
        make_disk(root, work, log)
    return final


def disk_from_dir(host: Host, final: Path, log: IO[str]) -> Path:
    """An x86_64 host's machine image, from a copy of its debootstrapped image dir (built first if need be)."""
    source = ensure_root_dir(host, log)
    with building(final) as work:
        subprocess.run(["cp", "-a", "--reflink=auto", str(source), str(work / "root")], check=True)
        root = work / "root"
        (root / "etc/hostname").write_text(f"kvmwd-{host.name}\n")
        (root / "etc/fstab").write_text("/dev/vda / ext4 defaults 0 1\n")
        make_disk(root, work, log)
    return final


@contextlib.contextmanager
def building(final: Path) -> Iterator[Path]:
    """A work dir in the cache, renamed to `final` once whole; removed when the build stops short."""
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="building-", dir=CACHE))
    try:
        yield work
        work.rename(final)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def make_disk(root: Path, work: Path, log: IO[str]) -> None:
    """The job unit and the kvm rule into the root, its kernel and initrd beside it, then the root as an ext4 image."""
    unit = root / "etc/systemd/system/kvmwd-job.service"
    unit.write_text(JOB_UNIT)
    (root / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True, exist_ok=True)
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
    used = int(subprocess.run(["du", "-sxm", str(root)], capture_output=True, text=True, check=True).stdout.split()[0])
    subprocess.run(
        ["mkfs.ext4", "-q", "-L", "root", "-d", str(root), str(work / "root.img"), f"{used + 2048}M"],
        check=True,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    shutil.rmtree(root)


def boot_argv(host: Host, image: Path, overlay: Path, job: Path) -> List[str]:
    """How the host boots: the machine, its kernel's command line, the overlay disk and the job share."""
    common = [
        "-smp", "2", "-m", "2048", "-nographic", "-no-reboot", "-nic", "none",
        "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"),
        "-drive", f"file={overlay},if=virtio,format=qcow2",
        "-virtfs", f"local,path={job},mount_tag=job,security_model=none,id=job",
    ]  # fmt: skip
    quiet = "root=/dev/vda rw quiet systemd.show_status=0"
    if host.boot == "qemu-aarch64":
        machine = ["qemu-system-aarch64", "-M", "virt,virtualization=on,gic-version=3", "-cpu", "max"]
        return [*machine, *common, "-append", f"console=ttyAMA0 {quiet}"]
    legacy = "systemd.unified_cgroup_hierarchy=0 systemd.legacy_systemd_cgroup_controller=1"
    # TCG, not KVM: this machine kind's KVM is PVM (kvm_pvm), which runs only PVM-enabled guest kernels; Debian's
    # stock kernel stalls right after its decompressor there (seen here), and boots in about 10 s under TCG
    machine = ["qemu-system-x86_64", "-M", "q35", "-accel", "tcg,thread=multi", "-cpu", "max"]
    return [*machine, *common, "-append", f"console=ttyS0 {quiet} {legacy}"]


class Machine:
    """One boot of a host's image: a job dir in, its out.log and rc back."""

    def __init__(self, host: Host, image: Path, workdir: Path):
        self.host = host
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
        argv = boot_argv(self.host, self.image, overlay, self.job)
        started = time.monotonic()
        with open(self.console, "wb") as console:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
                raise AssertionError(
                    f"the {self.host.name} machine did not power off in {timeout:.0f}s: {self.console_text()[-3000:]}"
                ) from None
        overlay.unlink(missing_ok=True)
        rc: Optional[int] = int((self.job / "rc").read_text().strip()) if (self.job / "rc").exists() else None
        out = (self.job / "out.log").read_text(errors="replace") if (self.job / "out.log").exists() else ""
        return JobResult(rc, out, self.console_text(), time.monotonic() - started)

    def run_recorded(self, script: str, files: Sequence[str], timeout: float) -> Dict[str, Any]:
        """Copy the job's files from the harness, run `python3 SCRIPT` inside, and return what it recorded
        (results.json) with the run's own figures (its exit status, output and seconds)."""
        for name in (script, *files):
            shutil.copy(HERE / name, self.job / name)
        result = self.run_job(f"exec python3 /mnt/job/{script} /mnt/job\n", timeout=timeout)
        path = self.job / "results.json"
        assert path.exists(), (
            f"the job recorded nothing (rc {result.rc}): {result.out[-2000:]}\n{result.console[-3000:]}"
        )
        seen: Dict[str, Any] = json.loads(path.read_text())
        seen["job_rc"], seen["job_out"], seen["boot_and_job_s"] = result.rc, result.out, round(result.seconds, 1)
        return seen

    def console_text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""


class JobResult:
    def __init__(self, rc: Optional[int], out: str, console: str, seconds: float):
        self.rc, self.out, self.console, self.seconds = rc, out, console, seconds


if __name__ == "__main__":
    if sys.argv[1:2] == ["build"]:
        print(ensure_image(HOSTS[sys.argv[2]] if sys.argv[2:] else HOSTS["bookworm-arm64"]))
    else:
        sys.stderr.write(__doc__ or "")
        sys.exit(2)
