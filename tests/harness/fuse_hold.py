"""A real process whose /proc/PID/cmdline read blocks in the kernel until the test lets it go.

The field's shape (nhc, moby, garden-runc reports): a process whose memory is backed by a
stalled FUSE or NFS file makes any read of its /proc/PID/cmdline wait in the kernel. Here: a
minimal FUSE server on /dev/fuse (the kernel's own protocol, no library) serves one 4 KiB file
and holds every READ until `release()`; a process named like QEMU maps that file (direct I/O), one
thread faults its page in (FUSE is asked, and holds it), another maps the file again: mmap()
takes the memory-map lock and then waits for that page. Reading its cmdline takes the same lock
(the kernel reads another process's argv only from anonymous memory, so a FUSE page under argv
itself would not do), and waits.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import List, Optional

IN_HEADER = struct.Struct("<IIQQIIIHH")  # len, opcode, unique, nodeid, uid, gid, pid, total_extlen, padding
OUT_HEADER = struct.Struct("<IiQ")  # len, error, unique
ATTR = struct.Struct(
    "<QQQQQQIIIIIIIIII"
)  # ino size blocks atime mtime ctime *nsec mode nlink uid gid rdev blksize flags
LOOKUP, FORGET, GETATTR, OPEN, READ, RELEASE, INIT, INTERRUPT, BATCH_FORGET = 1, 2, 3, 14, 15, 18, 26, 36, 42
NO_REPLY = (FORGET, INTERRUPT, BATCH_FORGET)
ROOT, FILE, SIZE = 1, 2, 4096
FOPEN_DIRECT_IO = 1
NAME = "argv"

VICTIM = r"""
import ctypes, os, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
libc.prctl(15, ctypes.cast(ctypes.c_char_p(b"qemu-system-x86"), ctypes.c_void_p).value, 0, 0, 0)  # PR_SET_NAME
fd = os.open(sys.argv[1], os.O_RDONLY)
first = libc.mmap(None, 4096, 1, 0x02, fd, 0)  # PROT_READ, MAP_PRIVATE
# a thread faults the page in: the kernel locks it and asks FUSE, which holds the READ
byte = ctypes.create_string_buffer(1)
threading.Thread(target=lambda: libc.memcpy(byte, ctypes.c_void_p(first), 1), daemon=True).start()  # GIL let go
time.sleep(0.5)
print("ready", flush=True)
# a second map of the file (direct I/O): taken under the memory-map lock, it waits for that page's lock, holding it
libc.mmap(None, 4096, 1, 0x02, fd, 0)
time.sleep(3600)
"""


class HeldFile:
    """One file on a FUSE mount whose reads are answered only once released."""

    def __init__(self, mountpoint: Path):
        self.mountpoint = mountpoint
        self.fd = -1
        self.held: List[int] = []  # READ requests not yet answered (their unique ids)
        self.released = threading.Event()
        self.reads = 0
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    @property
    def path(self) -> Path:
        return self.mountpoint / NAME

    def mount(self) -> HeldFile:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        libc = ctypes.CDLL(None, use_errno=True)
        options = f"fd={self.fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
        if libc.mount(b"kvmwd-held", str(self.mountpoint).encode(), b"fuse", 0, options) != 0:
            raise OSError(ctypes.get_errno(), "mount fuse", str(self.mountpoint))
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        """Answer every held READ and every later one."""
        with self._lock:
            self.released.set()
            held, self.held = self.held, []
        for unique in held:
            self._reply(unique, bytes(SIZE))

    def close(self) -> None:
        self.release()
        subprocess.run(["umount", "-l", str(self.mountpoint)], check=False, capture_output=True)
        if self._thread is not None:
            self._thread.join(5)

    # ---- the protocol ---------------------------------------------------------------------
    def _reply(self, unique: int, payload: bytes = b"", error: int = 0) -> None:
        try:
            os.write(self.fd, OUT_HEADER.pack(OUT_HEADER.size + len(payload), -error, unique) + payload)
        except OSError:
            pass  # the request was interrupted, or the mount is gone

    @staticmethod
    def _attr(node: int) -> bytes:
        mode = (stat.S_IFDIR | 0o755) if node == ROOT else (stat.S_IFREG | 0o644)
        return ATTR.pack(node, 0 if node == ROOT else SIZE, 8, 0, 0, 0, 0, 0, 0, mode, 1, 0, 0, 0, 4096, 0)

    def _serve(self) -> None:
        while True:
            try:
                request = os.read(self.fd, 1 << 17)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.EINTR, errno.EAGAIN):
                    continue  # an interrupted request
                return  # ENODEV: unmounted
            _, opcode, unique, node, *_ = IN_HEADER.unpack_from(request)
            if opcode not in NO_REPLY:
                self._answer(opcode, unique, node, request[IN_HEADER.size :])

    def _answer(self, opcode: int, unique: int, node: int, body: bytes) -> None:
        if opcode == INIT:
            minor = struct.unpack_from("<II", body)[1]
            out = struct.pack("<IIIIHHIIHHII", 7, min(minor, 31), 0, 0, 16, 12, 4096, 1, 1, 0, 0, 0)
            self._reply(unique, out + bytes(64 - len(out)))
        elif opcode == LOOKUP and node == ROOT and body.split(b"\0", 1)[0] == NAME.encode():
            self._reply(unique, struct.pack("<QQQQII", FILE, 0, 0, 0, 0, 0) + self._attr(FILE))
        elif opcode == GETATTR:
            self._reply(unique, struct.pack("<QII", 0, 0, 0) + self._attr(node))
        elif opcode == OPEN:
            self._reply(unique, struct.pack("<QII", 0, FOPEN_DIRECT_IO, 0))
        elif opcode == READ:
            with self._lock:
                self.reads += 1
                if not self.released.is_set():
                    self.held.append(unique)
                    return
            self._reply(unique, bytes(SIZE))
        elif opcode == RELEASE:
            self._reply(unique)
        else:
            self._reply(unique, error=errno.ENOSYS)


def hung_process(held: HeldFile) -> subprocess.Popen[str]:
    """A root process named qemu-system-x86 whose argv lives in the held file's page (it waits until ended)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", VICTIM, str(held.path), "x" * 3 * SIZE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise AssertionError(f"the held process did not start: {proc.stderr.read() if proc.stderr else ''}")
    return proc
