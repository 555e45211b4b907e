"""What a parsed config asks of this host, checked before it is used: the composition root's step.

Root acts inside the probe and cache dirs, writes the textfile and reads the QEMU logs: none of
them may be redirectable by a less trusted user. The operator's signature table must load and
the Prometheus client must be new enough. `parse_config` stays pure; `load_config` is file ->
text -> Config -> this, for every caller (check, remediate, run, reload, config check).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pwd
from dataclasses import dataclass
from typing import Callable, List, Optional, Set, TextIO, Tuple

from ..config import Config, ConfigError, ConfigProblem, LibvirtConfig, parse_config, read_text
from ..diagnose.signatures import SignatureError, load_table
from ..fsafe import check_dir_without_links, check_path, non_root_writers
from ..trusted_files import why_untrusted_program

_Problem = Callable[[str, str], None]  # (key, message): a problem at the line that key was given at
PROMETHEUS_CLIENT_MIN = (0, 16)  # prometheus_client.registry.Collector, which the metrics collector is


def load_config(path: str, required: bool) -> Config:
    """Read, parse and preflight a config file; the default file may be absent (all defaults)."""
    text = read_text(path, required)
    if text is None:
        return Config()
    return preflight(parse_config(text, path))


def preflight(config: Config) -> Config:
    """The config with its notes, or ConfigError with every problem at the line of its key."""
    problems: List[ConfigProblem] = []

    def problem(key: str, message: str) -> None:
        section = key.split(".", 1)[0]
        line = config.lines.get(key) or config.lines.get(section) or 0
        problems.append(ConfigProblem(config.source or "", line, key, message))

    notes = _check_paths(config, problem)
    if config.diagnose.signatures:
        try:
            load_table(config.diagnose.signatures)
        except SignatureError as exc:
            problem("diagnose.signatures", str(exc))
    for index, hook in enumerate(config.hooks):
        why = why_untrusted_program(hook.run[0])
        if why:
            problem(f"hooks[{index}].run", f"refused: {why}")
    if config.metrics.textfile or config.metrics.listen:
        why = prometheus_client_problem()
        if why:
            problem("metrics", why)
    if problems:
        raise ConfigError(problems)
    return dataclasses.replace(config, notes=tuple(notes)) if notes else config


def qemu_uids(names: Tuple[str, ...]) -> Set[int]:
    """The uids of the qemu users that exist here."""
    found = set()
    for name in names:
        try:
            found.add(pwd.getpwnam(name).pw_uid)
        except KeyError:
            continue
    return found


def _qemu_owned_cache(path: str, lib: LibvirtConfig) -> Optional[str]:
    """A note when the cache dir is the qemu user's (libvirt < 7.8 makes and re-chowns it so), or None when it is not.

    Root never follows a link there (the scan and the quarantine open it one component at a
    time, O_NOFOLLOW), moves only regular files it can bound, and takes no finding about it as
    proof: that user could put anything in it."""
    writers = non_root_writers(path)
    if not writers or not set(writers) <= qemu_uids(lib.qemu_users):
        return None
    return (
        f"libvirt.cache_dir: {path} lies in a dir of the qemu user (uid {writers[0]}; libvirt before 7.8 makes it so):"
        " watched as that user's, quarantined through dir fds without following a link, its findings never proof"
    )


def _check_paths(config: Config, problem: _Problem) -> List[str]:
    """Refuse any dir root acts in that a less trusted user could redirect; the notes."""
    lib = config.libvirt
    owners = set()
    notes: List[str] = []
    for key, paths in (("probe_dirs", lib.probe_dirs), ("cache_dir", (lib.cache_dir,))):
        for path in paths:
            verdict = check_path(path, lib.session_dirs)
            note = (
                _qemu_owned_cache(path, lib) if key == "cache_dir" and not verdict.ok and not lib.session_dirs else None
            )
            if note:
                notes.append(note)
            elif not verdict.ok:
                problem(f"libvirt.{key}", verdict.why)
            elif verdict.owner is not None and verdict.owner != 0:
                owners.add(verdict.owner)
    if lib.session_dirs and len(owners) > 1:
        uids = ", ".join(map(str, sorted(owners)))
        problem(
            "libvirt.session_dirs",
            f"the probe and cache dirs belong to different users ({uids}): one config watches one libvirt",
        )
    # root writes the textfile into node_exporter's dir (through its fd, never following a link)
    # and reads the QEMU logs: neither may lie behind a link
    for key, path in (
        ("metrics.textfile", os.path.dirname(config.metrics.textfile or "")),
        ("libvirt.log_dir", lib.log_dir),
    ):
        if not path:
            continue
        why = check_dir_without_links(path)
        # libvirt makes its log dir at a first start
        if why and not (key == "libvirt.log_dir" and why.endswith("does not exist")):
            problem(key, why)
    return notes


def prometheus_client_problem() -> Optional[str]:
    """Why the metrics outlets cannot run with the Prometheus client installed here, or None.

    Debian 11 ships 0.9.0, which has no prometheus_client.registry.Collector: checked here, so
    `config check` says so instead of the daemon dying with an ImportError at its start."""
    if importlib.util.find_spec("prometheus_client") is None:
        return "needs the Prometheus client: install python3-prometheus-client (or pip install prometheus-client)"
    want = ".".join(map(str, PROMETHEUS_CLIENT_MIN))
    remedy = f"install a newer one (pip install 'prometheus-client>={want}'), or turn metrics off"
    try:
        from importlib import metadata  # novm (3.8+: the ImportError below is 3.7)
    except ImportError:  # Python 3.7 has no importlib.metadata: ask the module for what the outlets use
        from prometheus_client import registry

        return None if hasattr(registry, "Collector") else f"needs prometheus-client >= {want}: {remedy}"
    try:
        found = metadata.version("prometheus_client")
    except Exception:  # noqa: BLE001 (no metadata: an unpackaged copy; the import decides)
        return None
    parts = tuple(int(p) for p in found.split(".")[:2] if p.isdigit())
    if parts < PROMETHEUS_CLIENT_MIN:
        return f"needs prometheus-client >= {want}, found {found}: {remedy}"
    return None


@dataclass(frozen=True)
class ConfigSource:
    """Where the config comes from, so SIGHUP reads the same place again."""

    path: str
    required: bool

    def load(self) -> Config:
        return load_config(self.path, self.required)

    def read(self, err: TextIO) -> Optional[Config]:
        """The config, or None with each of its problems written to err (the CLI's and the daemon's start)."""
        try:
            return self.load()
        except ConfigError as exc:
            for problem in exc.problems:
                print(problem, file=err)
            return None
