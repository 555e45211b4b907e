"""One actor per state dir: `run` and `remediate` hold state_dir/run.lock, so two never act on the same probes."""

from __future__ import annotations

import os

from ..fsafe import try_flock


class AlreadyRunning(Exception):
    """Another `kvm-watchdog run` uses this state dir; two would act on the same probes."""


def hold_run_lock(state_dir: str) -> int:
    """An flock on state_dir/run.lock for the holder's lifetime (released when it exits); its pid written there."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    path = os.path.join(state_dir, "run.lock")
    fd = try_flock(path)
    if fd is None:
        with open(path, "rb") as f:
            holder = f.read(32).decode("ascii", "replace").strip() or "?"
        raise AlreadyRunning(f"another kvm-watchdog run (pid {holder}) is using {state_dir}")
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
