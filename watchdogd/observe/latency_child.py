"""The child that asks libvirt for domain capabilities, so the parent can kill it.

A call into a libvirt whose capabilities cache is locked by a hung probe never
returns, and a thread blocked in C cannot be cancelled; a child process can. The
child prints one JSON line per stage on stdout:

    {"stage": "connected", "ms": 1.2, "version": 9000000}
    {"stage": "domcaps", "ms": 310.5}
    {"stage": "error", "where": "connect" | "domcaps", "message": "...", "code": 38}

Only this child imports libvirt: the daemon itself stays small.
"""

from __future__ import annotations

import json
import sys
import time
from typing import List


def _say(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def _die_with_parent() -> None:
    """Never outlive the watchdog: a hung call left behind would hold a libvirt worker."""
    import os
    import signal

    from ..fsafe import libc

    try:
        libc().prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    parent = os.environ.get("KVMWD_PARENT_PID", "")
    if parent.isdigit() and os.getppid() != int(parent):
        os._exit(1)  # the parent is already gone


def main(argv: List[str]) -> int:
    _die_with_parent()
    if len(argv) not in (1, 2) or (len(argv) == 2 and argv[1] != "--connect-only"):
        sys.stderr.write("usage: python -m watchdogd.observe.latency_child URI [--connect-only]\n")
        return 2
    uri = argv[0]
    connect_only = len(argv) == 2
    try:
        import libvirt
    except ImportError as exc:
        _say(stage="error", where="connect", message=f"libvirt-python is not installed: {exc}", code=None)
        return 1
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # no stray stderr noise
    start = time.monotonic()
    try:
        conn = libvirt.open(uri)
        version = conn.getLibVersion()
    except libvirt.libvirtError as exc:
        _say(stage="error", where="connect", message=str(exc), code=exc.get_error_code())
        return 1
    _say(stage="connected", ms=(time.monotonic() - start) * 1000, version=version)
    if connect_only:
        conn.close()
        return 0
    start = time.monotonic()
    try:
        conn.getDomainCapabilities(None, None, None, None, 0)
    except libvirt.libvirtError as exc:
        _say(
            stage="error",
            where="domcaps",
            message=str(exc),
            code=exc.get_error_code(),
            ms=(time.monotonic() - start) * 1000,
        )
        return 1
    _say(stage="domcaps", ms=(time.monotonic() - start) * 1000)
    try:
        # asked only now: with capabilities answered it is cached, so it can neither probe nor hang
        _say(stage="hypervisor", version=conn.getVersion())
    except libvirt.libvirtError:
        pass
    try:
        conn.close()
    except libvirt.libvirtError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
