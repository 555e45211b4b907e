"""What must outlive a restart of the watchdog, kept in state_dir, written atomically.

A write goes to a temp file, is fsynced and renamed over the old one, so a crash or
a full disk leaves either the old state or the new, never half of one. A corrupt
file is moved aside (kept for the operator) and the watchdog goes on without it.
A file is never written past MAX_STATE_BYTES, so one read back is never taken for
corrupt because it was large; a larger one found is reported, not moved.

`read_only=True` (check, remediate --dry-run) changes nothing in state_dir: a
corrupt file is only reported, and every write is refused.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .fsafe import READ_NOFOLLOW
from .problems import Problem, Problems
from .timefmt import compact_utc

MAX_STATE_BYTES = 8 * 1024 * 1024  # what any state file may hold; writers bound what they save


class StateError(Exception):
    """State could not be written; the message says where and why."""

    def __init__(self, message: str, path: str = ""):
        super().__init__(message)
        self.path = path

    def problem(self, more: str = "") -> Problem:
        """As a Problem whose id is the file, whatever errno or size the words carry."""
        return Problem(str(self) + more, key=f"state-write:{self.path}")


@dataclass
class StateStore:
    root: str
    clock: Callable[[], float] = time.time
    problems: Problems = field(default_factory=Problems)  # corrupt or unreadable files met go here (the scan drains it)
    read_only: bool = False

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def read_json(self, name: str) -> Optional[Any]:
        """The stored object, or None when absent, unreadable or corrupt (then noted)."""
        path = self.path(name)
        try:
            fd = os.open(path, READ_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.problems.add(f"cannot read {path}: {exc.strerror}", key=f"state-read:{path}")
            return None
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_STATE_BYTES:
                text = (
                    f"{path} is {size} bytes, more than any state file is written ({MAX_STATE_BYTES}); "
                    "not read, left as it is"
                )
                self.problems.add(text, key=f"state-large:{path}")
                return None
            try:
                raw = f.read(MAX_STATE_BYTES + 1)
            except OSError as exc:
                self.problems.add(f"cannot read {path}: {exc.strerror}", key=f"state-read:{path}")
                return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            if self.read_only:
                self.problems.add(
                    f"{path} is corrupt ({exc}); left as it is (a read-only look)", f"state-corrupt:{path}"
                )
                return None
            aside = f"{path}.corrupt-{compact_utc(self.clock())}"
            try:
                os.replace(path, aside)
                self.problems.add(f"{path} was corrupt ({exc}); moved aside to {aside}", f"state-corrupt:{path}")
            except OSError as move_exc:
                self.problems.add(
                    f"{path} is corrupt ({exc}) and could not be moved aside: {move_exc.strerror}",
                    f"state-corrupt:{path}",
                )
            return None

    def write_json(self, name: str, obj: Any, durable: bool = True) -> None:
        """Replace a state file atomically; StateError (nothing half-written) on failure.

        durable=False skips the fsyncs, for what is rewritten every scan anyway.
        """
        path = self.path(name)
        if self.read_only:
            raise StateError(f"not writing {path}: this is a read-only look", path)
        data = json.dumps(obj, indent=1, sort_keys=True).encode() + b"\n"
        if len(data) > MAX_STATE_BYTES:
            raise StateError(
                f"not writing {path}: {len(data)} bytes is more than a state file may hold ({MAX_STATE_BYTES})", path
            )
        tmp = None
        try:
            directory = os.path.dirname(path)  # the state dir, or a dir of its own (incidents/)
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(name)}.", dir=directory)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                if durable:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = None
            if not durable:
                return
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise StateError(f"cannot write {path}: {exc.strerror or exc}", path) from None
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    # ---- the last kernel on which probing worked ------------------------------------

    def last_good_kernel(self) -> Optional[str]:
        data = self.read_json("kernel.json")
        release = data.get("release") if isinstance(data, dict) else None
        return release if isinstance(release, str) else None

    def record_good_kernel(self, release: str) -> None:
        if self.last_good_kernel() != release:
            self.write_json("kernel.json", {"release": release, "recorded_at": self.clock()})
