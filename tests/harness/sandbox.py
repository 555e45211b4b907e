"""A real, isolated libvirt for tests: an unprivileged session libvirtd that replays the incident.

- runs as a dedicated system user, with its own HOME and XDG dirs under one temp root,
  so probe dirs, cache and socket are all the sandbox's own;
- under supervisor.py (a subreaper): the probe's daemon re-parents to it and zombies
  are reaped, because PID 1 on the CI machines reaps nothing; it also restarts
  libvirtd on request, as systemd would;
- a fault-injecting emulator (fake_qemu.py) first on libvirtd's PATH; its mode lives
  in a file beside it, since libvirt scrubs the emulator's environment;
- teardown ends only processes this sandbox started, by PID.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Dict, List, Optional, cast

import psutil

from .wait import wait_for

HERE = Path(__file__).resolve().parent
USER = "kvmwd-test"
LIBVIRTD = shutil.which("libvirtd", path="/usr/sbin:/usr/bin:/sbin:/bin") or "/usr/sbin/libvirtd"


def ensure_user() -> pwd.struct_passwd:
    """The unprivileged user the sandboxed libvirtd runs as (made once per machine)."""
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ],
            check=True,
        )
        return pwd.getpwnam(USER)


# The harness reads processes through psutil, not through the package's own /proc code:
# a test must not share the code it checks.
_STATES = {
    psutil.STATUS_ZOMBIE: "Z",
    psutil.STATUS_DISK_SLEEP: "D",
    psutil.STATUS_RUNNING: "R",
    psutil.STATUS_STOPPED: "T",
}


def children_of(pid: int) -> List[int]:
    try:
        return [c.pid for c in psutil.Process(pid).children()]
    except psutil.Error:
        return []


def cmdline_of(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def state_of(pid: int) -> Optional[str]:
    """The one-letter state ps shows (S for any sleep that is not D)."""
    try:
        return _STATES.get(psutil.Process(pid).status(), "S")
    except psutil.Error:
        return None


def alive(pid: int) -> bool:
    """Running, that is: present and not a zombie."""
    state = state_of(pid)
    return state is not None and state != "Z"


if TYPE_CHECKING or sys.version_info >= (3, 8):
    from typing import TypedDict  # novm (3.8+, asked for above)
else:  # Python 3.7 (the fast lane imports the fixtures): a plain dict
    TypedDict = dict


class SeenProbe(TypedDict):
    """A live capability probe as the test sees it: its qmp dir and the daemon its pidfile names."""

    dir: Path
    daemon: int


class LibvirtSandbox:
    def __init__(self, root: Optional[str] = None):
        self.user = ensure_user()
        # Not under pytest's tmp_path: that lives below a 0700 dir the user cannot cross.
        self.root = Path(root or tempfile.mkdtemp(prefix="kvmwd-sandbox-", dir="/tmp"))
        os.chmod(self.root, 0o755)
        self.home = self.root / "home"
        self.bin = self.root / "bin"
        self.emulator = self.bin / "qemu-system-x86_64"
        self.fault_file = Path(str(self.emulator) + ".fault")
        self.supervisor: Optional[subprocess.Popen[bytes]] = None
        self.libvirtd_pid = 0  # 0 until a libvirtd answers
        self._log: Optional[BinaryIO] = None

    # ---- where things are --------------------------------------------------------------
    @property
    def socket(self) -> Path:
        return self.home / "run" / "libvirt" / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu+unix:///session?socket={self.socket}"

    @property
    def probe_dir(self) -> Path:
        return self.home / ".config" / "libvirt" / "qemu" / "lib"

    @property
    def log_dir(self) -> Path:
        """libvirt's per-domain QEMU logs (a session daemon keeps them in its cache dir)."""
        return self.home / ".cache" / "libvirt" / "qemu" / "log"

    @property
    def cache_dir(self) -> Path:
        return self.home / ".cache" / "libvirt" / "qemu" / "cache" / "capabilities"

    def config(self, state_dir: Path, **overrides: object) -> Dict[str, object]:
        """A watchdog config (as a dict) pointed at this sandbox."""
        cfg: Dict[str, object] = {
            "state_dir": str(state_dir),
            "events": "stderr",
            # a session libvirt: its dirs are the sandbox user's (libvirt.session_dirs)
            "libvirt": {
                "uri": self.uri,
                "probe_dirs": [str(self.probe_dir)],
                "cache_dir": str(self.cache_dir),
                "session_dirs": True,
                "log_dir": str(self.log_dir),
            },
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                merged = dict(cast(Dict[str, object], cfg[key]))
                merged.update(value)
                cfg[key] = merged
            else:
                cfg[key] = value
        return cfg

    def daemon_config(self, state_dir: Path, **overrides: object) -> Dict[str, object]:
        """A daemon's config for a story: scans every second, probes hung after 3 s, events to the journal, no
        latency calls (the story makes its own)."""
        base: Dict[str, object] = {
            "interval": "1s",
            "events": "journal",
            "detect": {"probe_hung_after": "3s"},
            "latency": {"enabled": False},
        }
        base.update(overrides)
        return self.config(state_dir, **base)

    # ---- life cycle ------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> LibvirtSandbox:
        self.bin.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        shutil.copy(HERE / "fake_qemu.py", self.emulator)
        os.chmod(self.emulator, 0o755)
        os.chmod(self.bin, 0o755)
        self.fault_file.write_text("none\n")
        os.chown(self.fault_file, self.user.pw_uid, self.user.pw_gid)
        for d in (self.home, self.home / "run"):
            d.mkdir(exist_ok=True)
            os.chown(d, self.user.pw_uid, self.user.pw_gid)
            os.chmod(d, 0o700)
        # its own entries (errors and warnings: the probe-failure ones among them) go to the journal, as a system
        # libvirtd's do by default
        conf = self.home / ".config" / "libvirt"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "libvirtd.conf").write_text('log_outputs = "3:journald"\n')
        for d in (self.home / ".config", conf, conf / "libvirtd.conf"):
            os.chown(d, self.user.pw_uid, self.user.pw_gid)
        env = [
            f"HOME={self.home}",
            f"XDG_CONFIG_HOME={self.home / '.config'}",
            f"XDG_CACHE_HOME={self.home / '.cache'}",
            f"XDG_RUNTIME_DIR={self.home / 'run'}",
            # /usr/bin stays off: it holds qemu-system-i386 and friends, and the incident's
            # host had one emulator, so one cache entry (the fake execs the real qemu by path)
            f"PATH={self.bin}:/usr/sbin:/sbin",
        ]
        uid, gid = self.user.pw_uid, self.user.pw_gid
        argv = [sys.executable, str(HERE / "supervisor.py"), str(self.supervisor_pidfile), "--"]
        argv += [
            "setpriv",
            f"--reuid={uid}",
            f"--regid={gid}",
            "--init-groups",
            "--",
            "env",
            "-i",
            *env,
            LIBVIRTD,
            "--timeout",
            "0",
        ]
        self._log = open(self.root / "libvirtd.log", "ab")
        self.supervisor = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, cwd="/", start_new_session=True
        )
        self.wait_libvirtd(timeout)
        return self

    @property
    def supervisor_pidfile(self) -> Path:
        return self.root / "libvirtd.pid"

    def current_libvirtd(self) -> Optional[int]:
        try:
            pid = int(self.supervisor_pidfile.read_text())
        except (OSError, ValueError):
            return None
        return pid if pid > 0 and alive(pid) else None

    def wait_libvirtd(self, timeout: float = 30.0, not_pid: Optional[int] = None) -> int:
        """Wait for a (new) libvirtd to answer; its pid."""

        def new_libvirtd() -> Optional[int]:
            pid = self.current_libvirtd()
            return pid if pid != not_pid else None

        self.libvirtd_pid = wait_for(new_libvirtd, timeout, "libvirtd to start")
        wait_for(self.answers, timeout, f"libvirtd at {self.socket} to answer")
        return self.libvirtd_pid

    def answers(self) -> bool:
        if not self.socket.exists():
            return False
        r = subprocess.run(["virsh", "-c", self.uri, "version"], capture_output=True, timeout=20)
        return r.returncode == 0

    def stop(self, timeout: float = 20.0) -> None:
        """Stop libvirtd, then end whatever probe processes it left, by PID."""
        if self.supervisor is not None and self.supervisor.poll() is None:
            self.supervisor.send_signal(signal.SIGTERM)  # it stops libvirtd, then exits
            try:
                self.supervisor.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.supervisor.pid, signal.SIGKILL)
                self.supervisor.wait(5)
        self.kill_leftovers()
        if self._log:
            self._log.close()
            self._log = None

    def restart_command(self) -> List[str]:
        """An argv that restarts this sandbox's libvirtd and returns once it answers."""
        return [sys.executable, str(HERE / "restart_libvirt.py"), str(self.root)]

    def kill_libvirtd(self) -> int:
        """libvirtd killed -9 (a crash); the supervisor notes it is down."""
        pid = self.libvirtd_pid
        assert pid
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: self.current_libvirtd() is None, 10, "libvirtd to be gone")
        return pid

    def start_libvirtd_again(self) -> int:
        assert self.supervisor is not None
        old = self.libvirtd_pid
        self.supervisor.send_signal(signal.SIGHUP)
        return self.wait_libvirtd(not_pid=old)

    def kill_leftovers(self) -> List[int]:
        """End every process of ours whose command line names this sandbox."""
        ended = []
        for pid in self.sandbox_pids():
            try:
                os.kill(pid, signal.SIGKILL)
                ended.append(pid)
            except ProcessLookupError:
                pass
        wait_for(lambda: not any(alive(pid) for pid in ended), 10, f"pids {ended} to end")
        return ended

    def sandbox_pids(self) -> List[int]:
        root = str(self.root)
        out = []
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) != os.getpid() and root in cmdline_of(int(name)):
                try:
                    if os.stat(f"/proc/{name}").st_uid == self.user.pw_uid:
                        out.append(int(name))
                except OSError:
                    pass
        return out

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # ---- faults ------------------------------------------------------------------------
    def arm(self, mode: str, count: Optional[int] = None) -> None:
        """Set the emulator's fault and make libvirt re-probe on its next lookup.

        libvirt re-probes when the binary's ctime changes, compared in whole seconds,
        so the ctime is bumped until its second differs from the one before.
        """
        self.fault_file.write_text(f"{mode} {count}\n" if count is not None else f"{mode}\n")
        before = int(os.stat(self.emulator).st_ctime)

        def bumped() -> bool:
            os.chmod(self.emulator, 0o755)
            return int(os.stat(self.emulator).st_ctime) != before

        wait_for(bumped, 5, "the emulator's ctime to move to a new second", poll=0.05)

    def hang(self, mode: str, count: Optional[int] = 1) -> subprocess.Popen[str]:
        """Replay the incident: the next probe hangs, and a virsh call waits behind it."""
        self.arm(mode, count)
        waiting = self.domcaps_async()
        wait_for(self.hung_probe, 30, f"a {mode} probe to appear")
        return waiting

    def build_hang_shim(self) -> Path:
        """Compile the LD_PRELOAD shim that makes the real qemu's daemon hang at chdir("/") (mode real-hang)."""
        shim = Path(str(self.emulator) + ".hang.so")
        if not shim.exists():
            subprocess.run(
                ["gcc", "-shared", "-fPIC", "-O2", "-o", str(shim), str(HERE / "chdir_hang.c"), "-ldl"], check=True
            )
            os.chmod(shim, 0o755)
        return shim

    def vm_fault(self, fault: str) -> None:
        """The next VM starts print the incident's start-up lines and abort ('pmu', 'irq'), or run ('')."""
        Path(str(self.emulator) + ".vmfault").write_text(fault + "\n")

    def virsh(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["virsh", "-c", self.uri, *args], capture_output=True, text=True, timeout=timeout)

    # ---- libvirt calls ---------------------------------------------------------------
    def domcaps(self, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["virsh", "-c", self.uri, "domcapabilities"], capture_output=True, text=True, timeout=timeout
        )

    def domcaps_async(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["virsh", "-c", self.uri, "domcapabilities"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    # ---- what a probe looks like ----------------------------------------------------------
    def qmp_dirs(self) -> List[Path]:
        try:
            return sorted(p for p in self.probe_dir.iterdir() if p.name.startswith("qmp-"))
        except FileNotFoundError:
            return []

    def hung_probe(self) -> Optional[SeenProbe]:
        """The current probe's dir and daemon pid once its pidfile names a live process."""
        for d in self.qmp_dirs():
            try:
                pid = int((d / "qmp.pid").read_text().strip())
            except (OSError, ValueError):
                continue
            if alive(pid):
                return {"dir": d, "daemon": pid}
        return None

    def the_hung_probe(self) -> SeenProbe:
        """The probe a replayed hang made (after `hang`, which waited for it)."""
        probe = self.hung_probe()
        assert probe is not None, f"no live probe under {self.probe_dir}"
        return probe

    def release(self) -> None:
        """End a hung probe the way an operator would: kill the pidfile's process."""
        probe = self.hung_probe()
        if probe:
            os.kill(probe["daemon"], signal.SIGKILL)

    def reset(self, timeout: float = 60) -> None:
        """Back to healthy between tests: no fault, no probe left, capabilities cached."""
        self.fault_file.write_text("none\n")
        self.vm_fault("")
        self.kill_leftovers()
        wait_for(lambda: not self.hung_probe(), timeout, "hung probes to end")
        wait_for(lambda: self.domcaps().returncode == 0, timeout, "domcapabilities to succeed")
        wait_for(lambda: not self.qmp_dirs(), timeout, "probe dirs to be removed by libvirt")


def file_tree(root: Path) -> Dict[str, object]:
    """Every path below root with its type, mode, size, mtime and content (for 'changed nothing')."""
    tree: Dict[str, object] = {}
    if not root.exists():
        return tree
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            content: object = None
            if stat.S_ISREG(st.st_mode) and st.st_size < 4 * 1024 * 1024:
                content = p.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(p)
            tree[str(p)] = (stat.S_IFMT(st.st_mode), st.st_mode, st.st_size, st.st_mtime_ns, content)
    return tree


def probe_shaped_dir(d: Path, pid: Optional[int] = None) -> Path:
    """A dir as libvirt leaves a probe's it could not clean up: mode 0700, the monitor's socket, and the pidfile
    (naming pid) where one is given."""
    d.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(d / "qmp.monitor"))
    if pid is not None:
        (d / "qmp.pid").write_text(f"{pid}\n")
    return d
