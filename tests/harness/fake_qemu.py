#!/usr/bin/python3
"""A fault-injecting stand-in for qemu-system-x86_64, for replaying the incident.

libvirt starts the emulator with a scrubbed environment, so the fault setting
cannot come from an env variable: it is read from ``<this file's real path>.fault``
beside the binary. Its content is ``MODE [COUNT]``:

- ``none``       exec the real emulator (healthy host; ``<this file>.real`` names it where it is not
                 ``/usr/bin/qemu-system-*``);
- ``hang-init``  the daemon writes its pidfile and never reports success down the
                 daemonize pipe: the incident (first process waits, second is a zombie);
- ``hang-qmp``   the daemon reports success, listens on the QMP socket and never greets;
- ``hang-read:PATH`` as hang-init, and the daemon then reads PATH (a file whose FUSE server holds
                 the read: signalled, it waits in D state, and SIGKILL cannot end it);
- ``slow:N``     wait N seconds, then exec the real emulator;
- ``crash``      print an error and abort, as qemu does on the broken kernel;
- ``no-kvm``     print QEMU's "Could not access KVM kernel module: Permission denied" and exit 1
                 (libvirt logs the probe failure to its journal);
- ``real-hang``  exec the REAL emulator with ``<this file>.hang.so`` preloaded: its
                 daemon never returns from chdir("/") (timed futex waits), exactly
                 where the incident's daemon hung.

A VM start (any invocation that is not a probe) runs the real emulator, unless
``<this file's real path>.vmfault`` says ``pmu`` or ``irq``: then it prints the
incident's arm64 start-up lines to stderr (libvirt puts them in the domain's log)
and aborts, as qemu-kvm did on that host.

With COUNT, the fault hits only the next COUNT probes, then the mode becomes ``none``.
Only capability probes (``-daemonize`` with ``-machine none``) are faulted; every
other invocation runs the real emulator. Stdlib only: it runs under /usr/bin/python3.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import sys
import time
from typing import List, NoReturn, Optional


def _real_emulator() -> str:
    """The real emulator this one stands in for: the path in ``<this file>.real`` (the Kylin host's
    /usr/libexec/qemu-kvm stands in for a real qemu-kvm kept off libvirt's PATH), else the one of its
    own name in /usr/bin (qemu-system-aarch64 on the arm64 host), else qemu-system-x86_64."""
    try:
        with open(os.path.realpath(__file__) + ".real") as f:
            return f.read().strip()
    except OSError:
        pass
    own = "/usr/bin/" + os.path.basename(__file__)
    if os.path.basename(__file__).startswith("qemu-system-") and os.path.exists(own):
        return own
    return "/usr/bin/qemu-system-x86_64"


REAL_EMULATOR = _real_emulator()


def _arg_after(argv: List[str], flag: str) -> Optional[str]:
    for i, arg in enumerate(argv[:-1]):
        if arg == flag:
            return argv[i + 1]
    return None


def _take_fault(fault_path: str) -> str:
    """Read the fault setting and consume one use of it, under a lock."""
    try:
        fd = os.open(fault_path, os.O_RDWR)
    except FileNotFoundError:
        return "none"
    with os.fdopen(fd, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        words = f.read().split()
        if not words:
            return "none"
        mode = words[0]
        if len(words) > 1:
            left = int(words[1])
            if left <= 0:
                return "none"
            f.seek(0)
            f.truncate()
            f.write("none\n" if left == 1 else "%s %d\n" % (mode, left - 1))
            f.flush()
            os.fsync(f.fileno())
        return mode


def _exec_real(argv: List[str]) -> NoReturn:
    os.execv(REAL_EMULATOR, [REAL_EMULATOR] + argv)


def _daemonize() -> int:
    """qemu's os_daemonize(): return the write end of the pipe, in the daemon.

    The first process blocks reading the pipe and exits 0 on a status byte of 0,
    1 on EOF. The second calls setsid(), forks the daemon and exits at once; the
    first never reaps it while it waits, so it stays a zombie.
    """
    rfd, wfd = os.pipe()
    if os.fork() > 0:
        os.close(wfd)
        while True:
            try:
                data = os.read(rfd, 1)
                break
            except InterruptedError:
                continue
        os._exit(0 if data == b"\0" else 1)
    os.close(rfd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.umask(0o027)
    for sig in (signal.SIGTSTP, signal.SIGTTOU, signal.SIGTTIN):
        signal.signal(sig, signal.SIG_IGN)
    return wfd


def _write_pidfile(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, b"%d\n" % os.getpid())
    os.close(fd)


def _listen_qmp(spec: str) -> socket.socket:
    # spec: unix:PATH,server=on,wait=off (or older: unix:PATH,server,nowait)
    path = spec.split(",", 1)[0][len("unix:") :]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(4)
    return sock


def _report_success(wfd: int) -> None:
    """qemu's os_setup_post(): tell the first process, drop the inherited stdio."""
    os.chdir("/")
    os.write(wfd, b"\0")
    os.close(wfd)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _hang(sock: Optional[socket.socket]) -> NoReturn:
    """Sit there as a wedged qemu does: accept monitor clients, never greet them."""
    held: List[socket.socket] = []
    while True:
        if sock is None:
            signal.pause()
            continue
        conn, _ = sock.accept()
        held.append(conn)


VM_FAULTS = {
    "pmu": [
        "qemu-system-x86_64: warning: Trying to enable KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 but failed.  Falling back to the legacy mode. ",
        "qemu-system-x86_64: PMU: KVM_SET_DEVICE_ATTR: Invalid argument",
        "qemu-system-x86_64: failed to set irq for PMU",
    ],
    "irq": ["qemu-system-x86_64: kvm_set_irq: No such device or address"],
}


def _vm_start(argv: List[str]) -> NoReturn:
    here = os.path.realpath(__file__)
    try:
        with open(here + ".vmfault") as f:
            fault = f.read().strip()
    except OSError:
        fault = ""
    if fault in VM_FAULTS:
        for line in VM_FAULTS[fault]:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
        os.abort()
    _exec_real(argv)


def main(argv: List[str]) -> int:
    is_probe = "-daemonize" in argv and any(a.startswith("none") for a in argv)
    if not is_probe:
        _vm_start(argv)
    mode = _take_fault(os.path.realpath(__file__) + ".fault")
    if mode == "none":
        _exec_real(argv)
    if mode.startswith("slow:"):
        time.sleep(float(mode.split(":", 1)[1]))
        _exec_real(argv)
    if mode == "real-hang":
        env = dict(os.environ, LD_PRELOAD=os.path.realpath(__file__) + ".hang.so")
        os.execve(REAL_EMULATOR, [sys.argv[0]] + argv, env)
    if mode == "crash":
        sys.stderr.write("qemu-system-x86_64: failed to set irq for PMU (fault injected)\n")
        sys.stderr.flush()
        os.abort()
    if mode == "no-kvm":
        # what QEMU prints when /dev/kvm refuses it, then exits 1: the commonest probe failure in the field
        sys.stderr.write("Could not access KVM kernel module: Permission denied\n")
        sys.stderr.write("qemu-system-x86_64: failed to initialize kvm: Permission denied\n")
        return 1
    # hang-read:PATH: the daemon reads PATH (a file whose FUSE server holds the read): once signalled, the kernel
    # waits out the request uninterruptibly (fs/fuse/dev.c), and SIGKILL cannot end it: a D-state probe
    read_from = mode.split(":", 1)[1] if mode.startswith("hang-read:") else None
    if mode not in ("hang-init", "hang-qmp") and read_from is None:
        sys.stderr.write("fake qemu: unknown fault mode %r\n" % mode)
        return 1
    pidfile = _arg_after(argv, "-pidfile")
    qmp = _arg_after(argv, "-qmp")
    wfd = _daemonize()
    if pidfile:
        _write_pidfile(pidfile)
    sock = _listen_qmp(qmp) if qmp and qmp.startswith("unix:") else None
    if mode == "hang-qmp":
        _report_success(wfd)
    if read_from is not None:
        with open(read_from, "rb") as held:
            held.read(1)
    _hang(sock)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
