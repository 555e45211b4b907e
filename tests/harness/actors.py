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
elif mode == "wide":  # hung "probes" of its own: COUNT processes x THREADS threads, each naming DIRS dirs (a 4 KiB argv)
    import threading
    threads, ndirs = int(sys.argv[4]), int(sys.argv[5])
    dirs = [os.path.join(base, "qmp-W%05d" % i) for i in range(ndirs)]
    for d in dirs:
        os.mkdir(d, 0o700)
    argv = []
    for d in dirs:
        argv += ["-pidfile", d + "/qmp.pid"]
    code = ("import ctypes, threading, time\n"
            "ctypes.CDLL(None).prctl(15, b'qemu-system-x86', 0, 0, 0)\n"
            "for _ in range(%d): threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n"
            "time.sleep(3600)\n" % (threads - 1))
    def spawn():
        pid = os.fork()
        if pid == 0:
            os.execvp(sys.executable, [sys.executable, "-c", code] + argv)
        return pid
    for i in range(count):
        spawn()
    print("ready", flush=True)
    while True:  # whatever the watchdog ends comes back: the flood lasts
        os.waitpid(-1, 0)
        spawn()
elif mode == "logflood":  # COUNT domain logs, each fed 64 KiB of blank lines a second
    files = [open(os.path.join(base, "flood%03d.log" % i), "ab", buffering=0) for i in range(count)]
    chunk = b"\n" * 65536
    print("ready", flush=True)
    while True:
        started = time.monotonic()
        for f in files:
            f.write(chunk)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
elif mode == "join":  # COUNT processes that name a genuine probe's dir (argv[4]), named like qemu, ignoring SIGTERM
    d = sys.argv[4]
    code = ("import ctypes, signal, time\n"
            "ctypes.CDLL(None).prctl(15, b'qemu-system-x86', 0, 0, 0)\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "time.sleep(3600)\n")
    kids = [os.spawnv(os.P_NOWAIT, sys.executable, [sys.executable, "-c", code, "-pidfile", d + "/qmp.pid"])
            for _ in range(count)]
    print("ready", " ".join(map(str, kids)), flush=True)
    for pid in kids:
        os.waitpid(pid, 0)
elif mode == "zombies":  # a zombie named like qemu every 50 ms for COUNT seconds, never reaped (each its own deadline)
    end = time.monotonic() + count
    n = 0
    while time.monotonic() < end:
        if os.fork() == 0:
            name("qemu-system-x86")
            os._exit(0)
        n += 1
        time.sleep(0.05)
    print(n, flush=True)
    time.sleep(3600)  # keeps them zombies until the test ends it
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


def attacker(mode: str, base: Path, count: int, *extra: str, argv_pad: int = 0) -> subprocess.Popen[str]:
    """The attacker's program, started as nobody; its stdout says what it made."""
    pad = ["x" * 1000] * argv_pad + [f"{base}/qmp-AAAAAA/qmp.pid"] if argv_pad else []
    return subprocess.Popen(
        as_nobody([SYSTEM_PYTHON, "-c", ATTACKER, mode, str(base), str(count), *extra, *pad]),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


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
uid = int(sys.argv[3]) if len(sys.argv) > 3 else None  # as libvirt does: the probe runs as the qemu user, who gets the dir
d = os.path.join(base, "qmp-" + "".join(random.choice(string.ascii_letters + string.digits) for _ in range(6)))
os.mkdir(d, 0o700)
as_user = []
if uid is not None:
    os.chown(d, uid, uid)
    as_user = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups", "--"]
first = subprocess.Popen(as_user + [emulator, "-S", "-no-user-config", "-nodefaults", "-nographic", "-machine", "none,accel=kvm:tcg",
                          "-qmp", "unix:%s/qmp.monitor,server=on,wait=off" % d, "-pidfile", d + "/qmp.pid", "-daemonize"])
print(d, first.pid, flush=True)
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
        self.proc: Optional[subprocess.Popen[str]] = None
        self.dir: Optional[Path] = None
        self.first: Optional[int] = None  # the probe's first process (the child of this 'libvirtd')

    def probe(self, base: Path, mode: str = "hang-init", as_uid: Optional[int] = None) -> Path:
        """as_uid: run the probe as that uid and hand it the dir, as libvirt does with the qemu user."""
        fault = Path(str(self.emulator) + ".fault")
        fault.write_text(mode + "\n")
        fault.chmod(0o666)  # the emulator (run as the qemu user) takes its fault from it
        argv = [sys.executable, "-c", ROOT_LIBVIRT, str(self.emulator), str(base)] + (
            [str(as_uid)] if as_uid is not None else []
        )
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        made = Path(line[0])
        self.dir, self.first = made, int(line[1])
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
