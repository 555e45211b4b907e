"""The YAML config: defaults for every key, and errors that say FILE:LINE and what is wrong.

Unknown keys are errors, not warnings: a typo in a root daemon's policy
(``kil_probe``) must not silently turn remediation off.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pwd
import stat
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import yaml

from .durations import format_duration, parse_duration
from .fsafe import check_dir_without_links, check_path, non_root_writers, read_capped
from .model import ACTION_NAMES, ACTIONS, DEFAULT_GRACE, FINDING_KINDS, FORGEABLE_KINDS
from .sigtable import SignatureError, load_table

DEFAULT_PATH = "/etc/kvm-watchdog/config.yaml"
ENV_VAR = "KVM_WATCHDOG_CONFIG"


class _Invalid(Exception):
    pass


# ---- value parsers: a YAML value in, a Python value out, or _Invalid(why) ----------

Parser = Callable[[Any], Any]


def _duration(value: Any) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _positive_duration(value: Any) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        raise _Invalid(f"must be longer than 0, not {value!r}")
    return seconds


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"must be true or false, not {value!r}")
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"must be a non-empty string, not {value!r}")
    return value


def _abs_path(value: Any) -> str:
    text = _string(value)
    if not os.path.isabs(text):
        raise _Invalid(f"must be an absolute path, not {text!r}")
    return os.path.normpath(text)


def _abs_paths(value: Any) -> Tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _Invalid(f"must be a list of absolute paths, not {value!r}")
    return tuple(_abs_path(v) for v in value)


def _names(value: Any) -> Tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise _Invalid(f"must be a non-empty list of names, not {value!r}")
    return tuple(_string(v) for v in value)


def _int_at_least(lowest: int) -> Parser:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"must be a whole number, not {value!r}")
        if value < lowest:
            raise _Invalid(f"must be at least {lowest}, not {value}")
        return value

    return parse


def _choice(*allowed: str) -> Parser:
    def parse(value: Any) -> str:
        if value not in allowed:
            raise _Invalid(f"must be one of {', '.join(allowed)}, not {value!r}")
        return str(value)

    return parse


def _restart_command(value: Any) -> Union[str, Tuple[str, ...]]:
    if value == "auto":
        return "auto"
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        if not os.path.isabs(value[0]):
            raise _Invalid(f"the command must start with an absolute path, not {value[0]!r}")
        return tuple(value)
    raise _Invalid(f"must be 'auto' or an argv list such as [/bin/systemctl, restart, libvirtd], not {value!r}")


def _optional(parse: Parser) -> Parser:
    def parse_or_none(value: Any) -> Any:
        return None if value is None else parse(value)

    return parse_or_none


def _listen(value: Any) -> str:
    """HOST:PORT, [V6]:PORT or :PORT (loopback); the port checked here, the address when it is bound.

    >>> _listen(":9877"), _listen("0.0.0.0:9877"), _listen("[::1]:9877")
    (':9877', '0.0.0.0:9877', '[::1]:9877')
    """
    text = _string(value)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise _Invalid(f"must be HOST:PORT (e.g. 127.0.0.1:9877, or :9877 for loopback), not {text!r}")
    if host.startswith("[") != host.endswith("]") or (":" in host and not host.startswith("[")):
        raise _Invalid(f"an IPv6 address goes in brackets ([::1]:9877), not {text!r}")
    return text


def _grace(value: Any) -> Dict[str, float]:
    """finding kind -> how long its condition must hold before it opens."""
    if not isinstance(value, dict):
        raise _Invalid(f"must map finding kinds to durations (e.g. {{cache_empty: 30s}}), not {value!r}")
    out: Dict[str, float] = {}
    for kind, duration in value.items():
        if kind not in FINDING_KINDS:
            raise _Invalid(f"unknown finding kind {kind!r} (known: {', '.join(FINDING_KINDS)})")
        out[str(kind)] = _duration(duration)
    return {**DEFAULT_GRACE, **out}  # the operator's on top of the defaults (0s turns one off)


def key(default: Any, parse: Parser, duration: bool = False) -> Any:
    """A config key, declared once: its default, its parser, and whether it is a duration (for the dump)."""
    return field(default=default, metadata={"parse": parse, "duration": duration})


@dataclass(frozen=True)
class LibvirtConfig:
    uri: str = key("qemu:///system", _string)
    probe_dirs: Tuple[str, ...] = key(("/var/lib/libvirt/qemu",), _abs_paths)
    cache_dir: str = key("/var/cache/libvirt/qemu/capabilities", _abs_path)
    restart_command: Union[str, Tuple[str, ...]] = key("auto", _restart_command)
    restart_timeout: float = key(90.0, _positive_duration, duration=True)
    # True: the probe and cache dirs may belong to one ordinary user (a session
    # libvirt); members must still be that user's, and libvirt daemons count only
    # when they run as root or as that user.
    session_dirs: bool = key(False, _bool)
    # libvirt's per-domain QEMU logs, followed for start-up failure signatures
    log_dir: str = key("/var/log/libvirt/qemu", _abs_path)
    # the users libvirt runs QEMU as (Debian: libvirt-qemu; RHEL, openEuler: qemu). libvirt
    # before 7.8 gives them the cache dir: then it is watched as theirs (its findings unproven)
    qemu_users: Tuple[str, ...] = key(("libvirt-qemu", "qemu"), _names)


@dataclass(frozen=True)
class DetectConfig:
    probe_hung_after: float = key(60.0, _positive_duration, duration=True)
    stale_dir_after: float = key(600.0, _positive_duration, duration=True)
    # substrings of a process's comm (its executable's name) that mark an emulator;
    # only those processes have their command line read, which keeps the scan cheap
    emulator_names: Tuple[str, ...] = key(("qemu", "kvm"), _names)
    libvirt_daemons: Tuple[str, ...] = key(("libvirtd", "virtqemud"), _names)
    # probe dirs tracked per base dir; past it, one probe_dirs_flood finding says how
    # many (a dir that a live emulator names is always tracked)
    max_dirs_per_base: int = key(1000, _int_at_least(1))
    # kind -> duration: the daemon opens a finding only once its condition has held this long
    # (check and remediate report what they see at once); the rest open at once
    grace: Dict[str, float] = field(default_factory=lambda: dict(DEFAULT_GRACE), metadata={"parse": _grace, "duration": False})


@dataclass(frozen=True)
class LatencyConfig:
    enabled: bool = key(True, _bool)
    every: float = key(60.0, _positive_duration, duration=True)
    timeout: float = key(30.0, _positive_duration, duration=True)
    slow: float = key(5.0, _positive_duration, duration=True)
    # busy: call only while libvirt runs and is in use anyway (a probe dir, or a guest's
    # QEMU): a call resets a socket-activated daemon's idle timer. running: whenever a
    # libvirt daemon runs (keeps an idle one awake). always: even when none runs (wakes it).
    when: str = key("busy", _choice("busy", "running", "always"))


def _as_given(value: Any) -> Any:
    return value  # a policy's `do` is checked item by item, for per-item line numbers


@dataclass(frozen=True)
class PolicyConfig:
    name: str = field(metadata={"parse": _string, "duration": False})
    on: str = field(metadata={"parse": _string, "duration": False})
    do: Tuple[str, ...] = field(metadata={"parse": _as_given, "duration": False})
    times: int = key(1, _int_at_least(1))
    within: float = key(3600.0, _positive_duration, duration=True)
    cooldown: float = key(0.0, _duration, duration=True)
    dry_run: bool = key(False, _bool)


@dataclass(frozen=True)
class LimitsConfig:
    actions: int = key(20, _int_at_least(1))
    per: float = key(3600.0, _positive_duration, duration=True)
    # a separate budget for actions on evidence the qemu user could have forged
    # (probes not proven libvirt's, stale dirs): it can never pause the one above
    unproven_actions: int = key(20, _int_at_least(1))


@dataclass(frozen=True)
class ActionsConfig:
    kill_grace: float = key(5.0, _duration, duration=True)  # SIGTERM to SIGKILL
    quarantine_keep: int = key(5, _int_at_least(1))  # quarantined cache sets kept in state_dir


@dataclass(frozen=True)
class DiagnoseConfig:
    signatures: Optional[str] = key(None, _optional(_abs_path))  # an extra signature table, tried before the shipped one
    kvm_selftest: str = key("auto", _choice("auto", "off"))  # auto: at start, where /dev/kvm exists


@dataclass(frozen=True)
class MetricsConfig:
    textfile: Optional[str] = key(None, _optional(_abs_path))  # node_exporter's textfile collector, written atomically
    listen: Optional[str] = key(None, _optional(_listen))  # HOST:PORT of an HTTP /metrics endpoint

    @property
    def listen_address(self) -> Tuple[str, int]:
        """(host, port) to bind: loopback when no host is given."""
        assert self.listen is not None
        host, _, port = self.listen.rpartition(":")
        return (host.strip("[]") or "127.0.0.1"), int(port)


DEFAULT_POLICIES = (
    PolicyConfig(name="kill-hung-probes", on="probe_hung", do=("kill_probe",)),
    PolicyConfig(
        name="reset-after-repeated-hangs",
        on="probe_hung",
        do=("quarantine_cache", "restart_libvirt"),
        times=3,
        within=3600.0,
    ),
)


@dataclass(frozen=True)
class Config:
    interval: float = key(5.0, _positive_duration, duration=True)
    dry_run: bool = key(False, _bool)
    state_dir: str = key("/var/lib/kvm-watchdog", _abs_path)
    events: str = key("auto", _choice("journal", "stderr", "auto"))
    libvirt: LibvirtConfig = field(default_factory=LibvirtConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    policies: Tuple[PolicyConfig, ...] = DEFAULT_POLICIES
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    actions: ActionsConfig = field(default_factory=ActionsConfig)
    diagnose: DiagnoseConfig = field(default_factory=DiagnoseConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    source: Optional[str] = None  # the file it came from; None: built-in defaults
    notes: Tuple[str, ...] = ()  # what the load accepted but an operator should know (config check prints them)


def _parsers(cls: type) -> Dict[str, Parser]:
    return {f.name: f.metadata["parse"] for f in dataclasses.fields(cls) if "parse" in f.metadata}


# What the parser, the dump and the man page read: all derived from the declarations above.
TOP_LEVEL: Dict[str, Parser] = _parsers(Config)
_SECTION_CLASSES: Dict[str, type] = {
    "libvirt": LibvirtConfig,
    "detect": DetectConfig,
    "latency": LatencyConfig,
    "limits": LimitsConfig,
    "actions": ActionsConfig,
    "diagnose": DiagnoseConfig,
    "metrics": MetricsConfig,
}
SECTIONS: Dict[str, Tuple[type, Dict[str, Parser]]] = {name: (cls, _parsers(cls)) for name, cls in _SECTION_CLASSES.items()}
assert set(SECTIONS) == {f.name for f in dataclasses.fields(Config) if dataclasses.is_dataclass(f.type) or f.default_factory is not dataclasses.MISSING}
POLICY_KEYS: Dict[str, Parser] = _parsers(PolicyConfig)
_DURATION_KEYS = frozenset(
    f.name for cls in (Config, PolicyConfig, *(c for c, _ in SECTIONS.values())) for f in dataclasses.fields(cls) if f.metadata.get("duration")
)


@dataclass(frozen=True)
class ConfigProblem:
    file: str
    line: int  # 1-based; 0 when the problem is the file as a whole
    where: str  # the key path, e.g. "policies[2].do[0]"
    message: str

    def __str__(self) -> str:
        where = f"{self.where}: " if self.where else ""
        return f"{self.file}:{self.line}: {where}{self.message}"


class ConfigError(Exception):
    """A config that cannot be used; carries every problem found, not just the first."""

    def __init__(self, problems: Sequence[ConfigProblem]):
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class _Reader:
    """Walks the YAML node tree so that every problem keeps its line number."""

    def __init__(self, filename: str):
        self.filename = filename
        self.problems: List[ConfigProblem] = []
        self._loader = yaml.SafeLoader("")

    def problem(self, node: Optional[yaml.Node], where: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 0
        self.problems.append(ConfigProblem(self.filename, line, where, message))

    def value(self, node: yaml.Node) -> Any:
        return self._loader.construct_object(node, deep=True)

    def mapping(self, node: yaml.Node, where: str) -> Dict[str, Tuple[yaml.Node, yaml.Node]]:
        """A mapping's items by key, reporting non-string and duplicate keys."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, where, f"must be a mapping of keys to values, not {self.value(node)!r}")
            return {}
        items: Dict[str, Tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            # Keys as written: YAML 1.1 would read a policy's `on:` as the boolean true.
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else self.value(key_node)
            if not isinstance(key, str):
                self.problem(key_node, where, f"keys must be names, not {key!r}")
                continue
            if key in items:
                self.problem(key_node, _join(where, key), "given twice")
                continue
            items[key] = (key_node, value_node)
        return items

    def fields(self, items: Mapping[str, Tuple[yaml.Node, yaml.Node]], where: str, parsers: Mapping[str, Parser]) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for key, (key_node, value_node) in items.items():
            path = _join(where, key)
            parser = parsers.get(key)
            if parser is None:
                self.problem(key_node, path, f"unknown key (known here: {', '.join(sorted(parsers))})")
                continue
            try:
                out[key] = parser(self.value(value_node))
            except _Invalid as exc:
                self.problem(value_node, path, str(exc))
        return out

    def policies(self, node: yaml.Node) -> Tuple[PolicyConfig, ...]:
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, "policies", "must be a list of policies")
            return ()
        policies: List[PolicyConfig] = []
        seen: Dict[str, int] = {}
        for index, item in enumerate(node.value):
            where = f"policies[{index}]"
            before = len(self.problems)
            items = self.mapping(item, where)
            values = self.fields(items, where, POLICY_KEYS)
            for required in ("name", "on", "do"):
                if required not in items and isinstance(item, yaml.MappingNode):
                    self.problem(item, where, f"missing '{required}'")
            if "on" in values and values["on"] not in FINDING_KINDS:
                self.problem(items["on"][1], f"{where}.on", f"unknown finding kind {values['on']!r} (known: {', '.join(FINDING_KINDS)})")
            if "do" in values:
                values["do"] = self._actions(items["do"][1], f"{where}.do", values.get("on"))
            if "name" in values:
                if values["name"] in seen:
                    self.problem(items["name"][1], f"{where}.name", f"name {values['name']!r} already used by policies[{seen[values['name']]}]")
                seen.setdefault(values["name"], index)
            if len(self.problems) == before:
                policies.append(PolicyConfig(**values))
        return tuple(policies)

    def _actions(self, node: yaml.Node, where: str, kind: Optional[str]) -> Tuple[str, ...]:
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            self.problem(node, where, "must be a non-empty list of actions")
            return ()
        actions: List[str] = []
        for index, item in enumerate(node.value):
            name = self.value(item)
            here = f"{where}[{index}]"
            if name not in ACTION_NAMES:
                self.problem(item, here, f"unknown action {name!r} (known: {', '.join(ACTION_NAMES)})")
                continue
            applies = ACTIONS[name].applies_to
            if ACTIONS[name].host_wide and kind in FORGEABLE_KINDS:
                self.problem(item, here, f"{name} is host-wide and {kind} is evidence the qemu user can forge; it could never act (see docs/THREAT-MODEL.md)")
                continue
            if kind in FINDING_KINDS and "*" not in applies and kind not in applies:
                self.problem(item, here, f"{name} cannot act on {kind} (it acts on {', '.join(applies)})")
                continue
            actions.append(name)
        return tuple(actions)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def parse_config(text: str, filename: str) -> Config:
    """A Config from YAML text, or ConfigError listing every problem with its line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigProblem(filename, line, "", f"not valid YAML: {reason}")]) from None
    if root is None:
        return Config(source=filename)
    reader = _Reader(filename)
    try:
        config: Optional[Config] = _read_all(root, reader)
    except yaml.YAMLError as exc:  # e.g. a tag the safe loader cannot construct
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        reason = getattr(exc, "problem", None) or str(exc)
        reader.problems.append(ConfigProblem(filename, mark.line + 1 if mark else 0, "", f"not a usable YAML value: {reason}"))
    if reader.problems:
        raise ConfigError(reader.problems)
    assert config is not None
    return config


def _read_all(root: yaml.Node, reader: _Reader) -> Optional[Config]:
    """Walk the whole document; None when any problem was found."""
    top = reader.mapping(root, "")
    values: Dict[str, Any] = {}
    for key, (key_node, value_node) in top.items():
        if key in TOP_LEVEL:
            values.update(reader.fields({key: (key_node, value_node)}, "", TOP_LEVEL))
        elif key in SECTIONS:
            cls, parsers = SECTIONS[key]
            if isinstance(value_node, yaml.ScalarNode) and reader.value(value_node) is None:
                continue  # "detect:" with nothing under it: all defaults
            values[key] = cls(**reader.fields(reader.mapping(value_node, key), key, parsers))
        elif key == "policies":
            values["policies"] = reader.policies(value_node)
        else:
            known = sorted(list(TOP_LEVEL) + list(SECTIONS) + ["policies"])
            reader.problem(key_node, key, f"unknown key (known: {', '.join(known)})")
    config = Config(source=reader.filename, **values) if not reader.problems else None
    if config is not None:
        _check_consistency(config, top, reader)
        notes = _check_paths(config, top, reader)
        if notes:
            config = dataclasses.replace(config, notes=tuple(notes))
    return config


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


def _check_paths(config: Config, top: Dict[str, Tuple[yaml.Node, yaml.Node]], reader: _Reader) -> List[str]:
    """Root acts inside the probe and cache dirs: refuse any that a less trusted user could redirect; the notes."""
    lib = config.libvirt
    node = top.get("libvirt", (None, None))[1]
    items = reader.mapping(node, "libvirt") if isinstance(node, yaml.MappingNode) else {}
    owners = set()
    notes: List[str] = []
    for key, paths in (("probe_dirs", lib.probe_dirs), ("cache_dir", (lib.cache_dir,))):
        at = items.get(key, (None, node))[1]
        for path in paths:
            verdict = check_path(path, lib.session_dirs)
            note = _qemu_owned_cache(path, lib) if key == "cache_dir" and not verdict.ok and not lib.session_dirs else None
            if note:
                notes.append(note)
            elif not verdict.ok:
                reader.problem(at, f"libvirt.{key}", verdict.why)
            elif verdict.owner is not None and verdict.owner != 0:
                owners.add(verdict.owner)
    if lib.session_dirs and len(owners) > 1:
        uids = ", ".join(map(str, sorted(owners)))
        reader.problem(node, "libvirt.session_dirs", f"the probe and cache dirs belong to different users ({uids}): one config watches one libvirt")
    # root writes the textfile into node_exporter's dir (through its fd, never following a link)
    # and reads the QEMU logs: neither may lie behind a link
    for section, key, path in (("metrics", "textfile", os.path.dirname(config.metrics.textfile or "")), ("libvirt", "log_dir", lib.log_dir)):
        if not path:
            continue
        why = check_dir_without_links(path)
        if why and not (key == "log_dir" and why.endswith("does not exist")):  # libvirt makes its log dir at a first start
            sect = top.get(section, (None, None))[1]
            sect_items = reader.mapping(sect, section) if isinstance(sect, yaml.MappingNode) else {}
            reader.problem(sect_items.get(key, (None, sect))[1], f"{section}.{key}", why)
    return notes


PROMETHEUS_CLIENT_MIN = (0, 16)  # prometheus_client.registry.Collector, which the metrics collector is


def prometheus_client_problem() -> Optional[str]:
    """Why the metrics outlets cannot run with the Prometheus client installed here, or None.

    Debian 11 ships 0.9.0, which has no prometheus_client.registry.Collector: checked here, so
    `config check` says so instead of the daemon dying with an ImportError at its start."""
    if importlib.util.find_spec("prometheus_client") is None:
        return "needs the Prometheus client: install python3-prometheus-client (or pip install prometheus-client)"
    try:
        from importlib import metadata

        found = metadata.version("prometheus_client")
    except Exception:  # noqa: BLE001 (no metadata: an unpackaged copy; the import decides)
        return None
    parts = tuple(int(p) for p in found.split(".")[:2] if p.isdigit())
    if parts < PROMETHEUS_CLIENT_MIN:
        want = ".".join(map(str, PROMETHEUS_CLIENT_MIN))
        return f"needs prometheus-client >= {want}, found {found}: install a newer one (pip install 'prometheus-client>={want}'), or turn metrics off"
    return None


def _check_consistency(config: Config, top: Dict[str, Tuple[yaml.Node, yaml.Node]], reader: _Reader) -> None:
    """Rules between keys, reported at the key that would have to change."""
    if config.diagnose.signatures:
        try:
            load_table(config.diagnose.signatures)
        except SignatureError as exc:
            reader.problem(top.get("diagnose", (None, None))[1], "diagnose.signatures", str(exc))
    if config.metrics.textfile or config.metrics.listen:
        why = prometheus_client_problem()
        if why:
            reader.problem(top.get("metrics", (None, None))[1], "metrics", why)
    latency = config.latency
    if latency.slow >= latency.timeout:
        node = top.get("latency", (None, None))[1]
        reader.problem(node, "latency.slow", f"({format_duration(latency.slow)}) must be shorter than latency.timeout ({format_duration(latency.timeout)})")
    if latency.enabled and latency.every < latency.timeout:
        node = top.get("latency", (None, None))[1]
        reader.problem(
            node,
            "latency.every",
            f"({format_duration(latency.every)}) must be at least latency.timeout ({format_duration(latency.timeout)}): one probe in flight at most",
        )


def resolve_path(cli_path: Optional[str], environ: Mapping[str, str]) -> Tuple[str, bool]:
    """The config file to read, and whether the operator named it (then it must exist)."""
    if cli_path:
        return cli_path, True
    if environ.get(ENV_VAR):
        return environ[ENV_VAR], True
    return DEFAULT_PATH, False


def _read_regular_file(path: str, cap: int) -> bytes:
    """Up to cap bytes of a regular file; never blocks on a FIFO or a device put in its place."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file")
        return read_capped(fd, cap)
    finally:
        os.close(fd)


def load_config(path: str, required: bool) -> Config:
    """Read and parse a config file; the default file may be absent (all defaults)."""
    try:
        raw = _read_regular_file(path, 1024 * 1024 + 1)
    except FileNotFoundError:
        if not required:
            return Config()
        raise ConfigError([ConfigProblem(path, 0, "", "no such file")]) from None
    except OSError as exc:
        raise ConfigError([ConfigProblem(path, 0, "", f"cannot read: {exc.strerror or exc}")]) from None
    if len(raw) > 1024 * 1024:
        raise ConfigError([ConfigProblem(path, 0, "", "larger than 1 MiB; not a config file")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(path, 0, "", f"not UTF-8 text (byte {exc.start})")]) from None
    return parse_config(text, path)


def to_yaml(config: Config) -> str:
    """The effective config as YAML, durations spelled as operators write them."""

    def plain(obj: Any, name: str = "") -> Any:
        if dataclasses.is_dataclass(obj):
            return {f.name: plain(getattr(obj, f.name), f.name) for f in dataclasses.fields(obj) if f.name not in ("source", "notes")}
        if isinstance(obj, tuple):
            return [plain(v, name) for v in obj]
        if isinstance(obj, float) and name in _DURATION_KEYS:
            return format_duration(obj)
        if isinstance(obj, dict):
            return {k: format_duration(v) if isinstance(v, float) else v for k, v in obj.items()}
        return obj

    return yaml.safe_dump(plain(config), sort_keys=False, default_flow_style=False)
