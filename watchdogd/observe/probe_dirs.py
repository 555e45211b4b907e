"""The probe dirs of each base, read so that nothing a user swapped for a symlink is ever entered.

Every probe base is opened one component at a time without following links, every probe dir
through that fd, and its pidfile through the dir's fd. What the qemu user can make is bounded
here: at most detect.max_dirs_per_base dirs are read per base (dirs that a live emulator names
always are, so a flood cannot hide a real probe), and what is past that is one count. It
remembers which bases are missing, and since when, and when each dir was first seen (its age
grows with the monotonic clock from then: a wall clock set forward makes no dir stale).
"""

from __future__ import annotations

import os
import time
from typing import AbstractSet, Callable, Dict, List, NamedTuple, Optional, Tuple

from ..config import Config
from ..fsafe import BirthTime, PathRefused, open_dir_nofollow, open_path_nofollow
from ..model import DirFlood, MissingDir, PidfileRead
from ..pidfile import read_pidfile
from ..safety import QMP_DIR


class DirRead(NamedTuple):
    """A probe dir as read: its path, birth time (wall), owner and pidfile."""

    path: str
    made: float
    owner: int
    pidfile: PidfileRead


class BaseRead(NamedTuple):
    dirs: List[DirRead]
    flood: Optional[DirFlood]
    owner: Optional[int]  # the base's owner; None when it could not be read


class ProbeDirs:
    def __init__(
        self, config: Config, birth: BirthTime, pid_max: Callable[[], int], mono: Callable[[], float] = time.monotonic
    ):
        self.config = config
        self.birth = birth
        self.pid_max = pid_max
        self.mono = mono
        self.first_seen: Dict[str, Tuple[float, float]] = {}  # probe dir -> (monotonic time, its age then)
        self.missing_since: Dict[str, float] = {}  # probe base -> monotonic time it was first seen missing

    def adopt(self, old: ProbeDirs) -> None:
        self.first_seen = dict(old.first_seen)
        self.missing_since = {k: v for k, v in old.missing_since.items() if k in self.config.libvirt.probe_dirs}

    def missing(self) -> Tuple[MissingDir, ...]:
        mono = self.mono()
        return tuple(MissingDir(path, mono - since) for path, since in sorted(self.missing_since.items()))

    def keep_only(self, present: AbstractSet[str]) -> None:
        self.first_seen = {k: v for k, v in self.first_seen.items() if k in present}

    def read_base(self, base: str, named: AbstractSet[str], errors: List[str]) -> BaseRead:
        """The base's probe dirs (every one `named` names, and up to the cap of the rest), and its flood if any."""
        base_fd = self._open_or_note(base, errors)
        if base_fd is None:
            return BaseRead([], None, None)
        dirs: List[DirRead] = []
        cap = self.config.detect.max_dirs_per_base
        total = read = others = 0
        owner: Optional[int] = None
        try:
            owner = os.fstat(base_fd).st_uid
            with os.scandir(base_fd) as entries:
                for entry in entries:
                    name = entry.name
                    if not QMP_DIR.fullmatch(name):
                        continue
                    total += 1
                    if name not in named:
                        if others >= cap:
                            continue  # counted, not read: a flood costs a listing, not a scan of each dir
                        others += 1
                    read += 1
                    found = self._read_dir(base_fd, base, name, errors)
                    if found is not None:
                        dirs.append(found)
        except OSError as exc:
            errors.append(f"cannot list probe dir {base}: {exc.strerror}")
            return BaseRead(dirs, None, owner)  # what was read before it failed
        finally:
            os.close(base_fd)
        return BaseRead(dirs, DirFlood(base, total, read) if total > read else None, owner)

    def age(self, path: str, wall_age: float) -> float:
        """A dir's age from its birth time, but never more than the monotonic clock allows since first seen.

        Birth times are wall time: a clock set forward an hour would make every
        fresh probe dir look an hour old (and stale, and removable). Once a dir has
        been seen, its age grows with the monotonic clock only.
        """
        mono = self.mono()
        first = self.first_seen.setdefault(path, (mono, wall_age))
        return min(wall_age, first[1] + (mono - first[0]))

    def _open_or_note(self, base: str, errors: List[str]) -> Optional[int]:
        """The base's fd; None (with the reason noted) when it is missing or refused."""
        try:
            fd = open_path_nofollow(base)
        except FileNotFoundError:
            self.missing_since.setdefault(base, self.mono())
            return None
        except PathRefused:
            self.missing_since.pop(base, None)
            errors.append(f"probe dir {base} refused: {PathRefused.WHY}; nothing under it is read or touched")
            return None
        except OSError as exc:
            self.missing_since.pop(base, None)
            errors.append(f"cannot read probe dir {base}: {exc.strerror}")
            return None
        self.missing_since.pop(base, None)
        return fd

    def _read_dir(self, base_fd: int, base: str, name: str, errors: List[str]) -> Optional[DirRead]:
        try:
            dir_fd = open_dir_nofollow(name, dir_fd=base_fd)
        except (FileNotFoundError, PathRefused):
            return None  # vanished, or not a real dir: never a probe
        except OSError as exc:
            errors.append(f"cannot open {os.path.join(base, name)}: {exc.strerror}")
            return None
        try:
            made = self.birth.of_fd(dir_fd)
            owner = os.fstat(dir_fd).st_uid
            pidfile = read_pidfile(dir_fd, self.pid_max())
        finally:
            os.close(dir_fd)
        return DirRead(os.path.join(base, name), made, owner, pidfile)
