"""Who acts on a host in the trust tests: root's libvirt, and an unprivileged attacker.

- `RootLibvirt` stands in for the system libvirtd (root, comm "libvirtd"): it makes a
  qmp-XXXXXX dir the way libvirt does and runs the fault emulator in it, so its probe
  is a genuine one, proven by parentage. It is a subreaper, so the probe's daemon
  re-parents to it and is reaped (PID 1 here reaps nothing).
- `attacker(...)` runs a small Python program as `nobody`: whatever the qemu user
  can do, and nothing more (no capability, no group).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

from .wait import wait_for

HERE = Path(__file__).resolve().parent
NOBODY = pwd.getpwnam("nobody")
# The attacker runs the system's Python (stdlib only): a venv's interpreter may live under
# /root, which nobody cannot enter.
SYSTEM_PYTHON = "/usr/bin/python3"

# Runs as `nobody`. argv: MODE BASE COUNT [extra]; prints one line per thing made.
ATTACKER = r"""
import ctypes, os, signal, sys, time
libc = ctypes.CDLL(None)
def name(n):
    libc.prctl(15, n.encode(), 0, 0, 0)  # PR_SET_NAME: any comm it likes
mode, base, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "forge":  # fake probes: a forged "libvirtd" parent, children named like qemu naming its dirs
    ignore_term = sys.argv[4] == "ignore-term"
    tag = sys.argv[5]
    name("libvirtd")
    kids = []
    for i in range(count):
        d = os.path.join(base, "qmp-%s%02d" % (tag, i))
        os.mkdir(d, 0o700)
        pid = os.fork()
        if pid == 0:
            name("qemu-system-x86")
            if ignore_term:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.execvp(sys.executable, [sys.executable, "-c", "import ctypes,signal,time\n"
                "ctypes.CDLL(None).prctl(15, b'qemu-system-x86', 0, 0, 0)\n"
                + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "")
                + "time.sleep(3600)", "-qmp", "unix:%s/qmp.monitor,server=on,wait=off" % d, "-pidfile", d + "/qmp.pid", "-daemonize"])
        with open(d + "/qmp.pid", "w") as f:
            f.write("%d\n" % pid)
        kids.append(pid)
        print(d, pid, flush=True)
    for pid in kids:
        os.waitpid(pid, 0)
elif mode == "fat":  # many processes named like qemu with a huge argv
    name("qemu-x")
    kids = []
    for i in range(count):
        pid = os.fork()
        if pid == 0:
            time.sleep(3600)
            os._exit(0)
        kids.append(pid)
    print("ready", flush=True)
    for pid in kids:
        os.waitpid(pid, 0)
elif mode == "dirs":  # a flood of stale dirs
    for i in range(count):
        os.mkdir(os.path.join(base, "qmp-%06d" % i))
    print("ready", flush=True)
elif mode == "churn":  # make and remove a probe dir without end
    end = time.monotonic() + count
    n = 0
    while time.monotonic() < end:
        d = os.path.join(base, "qmp-Churn%d" % (n % 10))
        os.mkdir(d)
        os.rmdir(d)
        n += 1
    print(n, flush=True)
"""


def as_nobody(argv: List[str]) -> List[str]:
    return ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups", "--", *argv]


def attacker(mode: str, base: Path, count: int, *extra: str, argv_pad: int = 0) -> subprocess.Popen:
    """The attacker's program, started as nobody; its stdout says what it made."""
    pad = ["x" * 1000] * argv_pad + [f"{base}/qmp-AAAAAA/qmp.pid"] if argv_pad else []
    return subprocess.Popen(as_nobody([SYSTEM_PYTHON, "-c", ATTACKER, mode, str(base), str(count), *extra, *pad]), stdout=subprocess.PIPE, text=True, start_new_session=True)


def host_root() -> Path:
    """A root-owned tree under /tmp that nobody can traverse (pytest's tmp_path is 0700)."""
    root = Path(tempfile.mkdtemp(prefix="kvmwd-host-", dir="/tmp"))
    os.chmod(root, 0o755)
    return root


def nobodys(path: Path, mode: int = 0o750) -> Path:
    """A dir owned by nobody, as /var/lib/libvirt/qemu is the qemu user's."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
    os.chmod(path, mode)
    return path


ROOT_LIBVIRT = r"""
import ctypes, os, random, string, subprocess, sys
libc = ctypes.CDLL(None)
libc.prctl(15, b"libvirtd", 0, 0, 0)
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: the probe's daemon re-parents here
emulator, base = sys.argv[1], sys.argv[2]
d = os.path.join(base, "qmp-" + "".join(random.choice(string.ascii_letters + string.digits) for _ in range(6)))
os.mkdir(d, 0o700)
print(d, flush=True)
first = subprocess.Popen([emulator, "-S", "-no-user-config", "-nodefaults", "-nographic", "-machine", "none,accel=kvm:tcg",
                          "-qmp", "unix:%s/qmp.monitor,server=on,wait=off" % d, "-pidfile", d + "/qmp.pid", "-daemonize"])
first.wait()
try:
    while True:
        os.waitpid(-1, 0)
except ChildProcessError:
    pass
for n in os.listdir(d):
    os.unlink(os.path.join(d, n))
os.rmdir(d)
"""


class RootLibvirt:
    """root's 'libvirtd' making one genuine probe with the fault emulator (hang-init: the incident)."""

    def __init__(self, root: Path):
        self.bin = root / "bin"
        self.bin.mkdir(exist_ok=True)
        self.emulator = self.bin / "qemu-system-x86_64"
        shutil.copy(HERE / "fake_qemu.py", self.emulator)
        os.chmod(self.emulator, 0o755)
        self.proc: Optional[subprocess.Popen] = None
        self.dir: Optional[Path] = None

    def probe(self, base: Path, mode: str = "hang-init") -> Path:
        Path(str(self.emulator) + ".fault").write_text(mode + "\n")
        self.proc = subprocess.Popen([sys.executable, "-c", ROOT_LIBVIRT, str(self.emulator), str(base)], stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.proc.stdout is not None
        made = Path(self.proc.stdout.readline().strip())
        self.dir = made
        wait_for((made / "qmp.pid").exists, 10, "the genuine probe's pidfile")
        return made

    def stop(self) -> None:
        """End what this stand-in started, by PID: its probe's daemon (own session), then itself."""
        try:
            daemon = int((self.dir / "qmp.pid").read_text()) if self.dir else 0
            if daemon > 1:
                os.kill(daemon, 9)
        except (OSError, ValueError):
            pass
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(10)
