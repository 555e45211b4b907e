"""Every key of the config, declared once (default, parser, duration or not), and the dump back to YAML."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import yaml

from ..durations import format_duration
from ..kinds import DEFAULT_GRACE, Kind
from ..model import ActionName
from ..words import Word
from . import values as v
from .choices import EventsTo, KvmSelftest, LatencyWhen
from .values import Parser


@dataclass(frozen=True)
class LibvirtConfig:
    uri: str = v.key("qemu:///system", v.string)
    probe_dirs: Tuple[str, ...] = v.key(("/var/lib/libvirt/qemu",), v.abs_paths)
    cache_dir: str = v.key("/var/cache/libvirt/qemu/capabilities", v.abs_path)
    restart_command: Union[str, Tuple[str, ...]] = v.key("auto", v.restart_command)
    restart_timeout: float = v.key(90.0, v.positive_duration, duration=True)
    # True: the probe and cache dirs may belong to one ordinary user (a session
    # libvirt); members must still be that user's, and libvirt daemons count only
    # when they run as root or as that user.
    session_dirs: bool = v.key(False, v.boolean)
    # libvirt's per-domain QEMU logs, followed for start-up failure signatures
    log_dir: str = v.key("/var/log/libvirt/qemu", v.abs_path)
    # the users libvirt runs QEMU as (Debian: libvirt-qemu; RHEL, openEuler: qemu). libvirt
    # before 7.8 gives them the cache dir: then it is watched as theirs (its findings unproven)
    qemu_users: Tuple[str, ...] = v.key(("libvirt-qemu", "qemu"), v.names)
    # True: a hung probe that libvirt runs as a qemu user also drives host-wide policies
    # (docs/THREAT-MODEL.md, the rule): that user can then restart libvirt at will
    qemu_probes_host_wide: bool = v.key(False, v.boolean)


@dataclass(frozen=True)
class DetectConfig:
    probe_hung_after: float = v.key(60.0, v.positive_duration, duration=True)
    stale_dir_after: float = v.key(600.0, v.positive_duration, duration=True)
    # substrings of a process's comm (its executable's name) that mark an emulator;
    # only those processes have their command line read, which keeps the scan cheap
    emulator_names: Tuple[str, ...] = v.key(("qemu", "kvm"), v.names)
    libvirt_daemons: Tuple[str, ...] = v.key(("libvirtd", "virtqemud"), v.names)
    # probe dirs tracked per base dir; past it, one probe_dirs_flood finding says how
    # many (a dir that a live emulator names is always tracked)
    max_dirs_per_base: int = v.key(1000, v.int_at_least(1))
    # kind -> duration: the daemon opens a finding only once its condition has held this long
    # (check and remediate report what they see at once); the rest open at once
    grace: Dict[Kind, float] = field(
        default_factory=lambda: dict(DEFAULT_GRACE), metadata={"parse": v.grace, "duration": False}
    )


@dataclass(frozen=True)
class LatencyConfig:
    enabled: bool = v.key(True, v.boolean)
    every: float = v.key(60.0, v.positive_duration, duration=True)
    timeout: float = v.key(30.0, v.positive_duration, duration=True)
    slow: float = v.key(5.0, v.positive_duration, duration=True)
    when: LatencyWhen = v.key(LatencyWhen.BUSY, v.choice(LatencyWhen))


def _as_given(value: Any) -> Any:
    return value  # a policy's `do` is checked item by item, for per-item line numbers


@dataclass(frozen=True)
class PolicyConfig:
    name: str = field(metadata={"parse": v.string, "duration": False})
    on: Kind = field(metadata={"parse": v.string, "duration": False})  # the reader makes it a Kind
    do: Tuple[ActionName, ...] = field(metadata={"parse": _as_given, "duration": False})
    times: int = v.key(1, v.int_at_least(1))
    within: float = v.key(3600.0, v.positive_duration, duration=True)
    cooldown: float = v.key(0.0, v.duration, duration=True)
    dry_run: bool = v.key(False, v.boolean)


@dataclass(frozen=True)
class LimitsConfig:
    actions: int = v.key(20, v.int_at_least(1))
    per: float = v.key(3600.0, v.positive_duration, duration=True)
    # a separate budget for actions on evidence the qemu user could have forged
    # (probes not proven libvirt's, stale dirs): it can never pause the one above
    unproven_actions: int = v.key(20, v.int_at_least(1))


@dataclass(frozen=True)
class ActionsConfig:
    kill_grace: float = v.key(5.0, v.duration, duration=True)  # SIGTERM to SIGKILL
    quarantine_keep: int = v.key(5, v.int_at_least(1))  # quarantined cache sets kept in state_dir


@dataclass(frozen=True)
class DiagnoseConfig:
    # an extra signature table, tried before the shipped one
    signatures: Optional[str] = v.key(None, v.optional(v.abs_path))
    kvm_selftest: KvmSelftest = v.key(KvmSelftest.AUTO, v.choice(KvmSelftest))


@dataclass(frozen=True)
class MetricsConfig:
    # node_exporter's textfile collector, written atomically
    textfile: Optional[str] = v.key(None, v.optional(v.abs_path))
    listen: Optional[str] = v.key(None, v.optional(v.listen))  # HOST:PORT of an HTTP /metrics endpoint

    @property
    def listen_address(self) -> Tuple[str, int]:
        """(host, port) to bind: loopback when no host is given."""
        assert self.listen is not None
        host, _, port = self.listen.rpartition(":")
        return (host.strip("[]") or "127.0.0.1"), int(port)


CONDITION = "vm_starts_blocked"  # the host condition (decide/condition.py): what a hook may be on, beside finding kinds


@dataclass(frozen=True)
class HookConfig:
    """An operator's program, run once when what it is `on` (the condition, or a finding kind) opens and once when
    it resolves; the event as JSON on stdin (service/hooks.py)."""

    name: str = field(metadata={"parse": v.string, "duration": False})
    on: str = field(metadata={"parse": v.string, "duration": False})
    run: Tuple[str, ...] = field(metadata={"parse": v.argv, "duration": False})
    timeout: float = v.key(30.0, v.positive_duration, duration=True)


DEFAULT_POLICIES = (
    PolicyConfig(name="kill-hung-probes", on=Kind.PROBE_HUNG, do=(ActionName.KILL_PROBE,)),
    PolicyConfig(
        name="reset-after-repeated-hangs",
        on=Kind.PROBE_HUNG,
        do=(ActionName.QUARANTINE_CACHE, ActionName.RESTART_LIBVIRT),
        times=3,
        within=3600.0,
    ),
)


@dataclass(frozen=True)
class Config:
    interval: float = v.key(5.0, v.positive_duration, duration=True)
    dry_run: bool = v.key(False, v.boolean)
    state_dir: str = v.key("/var/lib/kvm-watchdog", v.abs_path)
    events: EventsTo = v.key(EventsTo.AUTO, v.choice(EventsTo))
    libvirt: LibvirtConfig = field(default_factory=LibvirtConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    policies: Tuple[PolicyConfig, ...] = DEFAULT_POLICIES
    hooks: Tuple[HookConfig, ...] = ()
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    actions: ActionsConfig = field(default_factory=ActionsConfig)
    diagnose: DiagnoseConfig = field(default_factory=DiagnoseConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    source: Optional[str] = None  # the file it came from; None: built-in defaults
    notes: Tuple[str, ...] = ()  # what the load accepted but an operator should know (config check prints them)
    # "section" or "section.key" -> the line it was given at: the preflight's problems point there
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)


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
SECTIONS: Dict[str, Tuple[type, Dict[str, Parser]]] = {
    name: (cls, _parsers(cls)) for name, cls in _SECTION_CLASSES.items()
}
assert set(SECTIONS) == {f.name for f in dataclasses.fields(Config) if f.default_factory is not dataclasses.MISSING} - {
    "lines"
}
POLICY_KEYS: Dict[str, Parser] = _parsers(PolicyConfig)
HOOK_KEYS: Dict[str, Parser] = _parsers(HookConfig)
DURATION_KEYS = frozenset(
    f.name
    for cls in (Config, PolicyConfig, HookConfig, *(c for c, _ in SECTIONS.values()))
    for f in dataclasses.fields(cls)
    if f.metadata.get("duration")
)


def to_yaml(config: Config) -> str:
    """The effective config as YAML, durations spelled as operators write them."""

    def plain(obj: Any, name: str = "") -> Any:
        if dataclasses.is_dataclass(obj):
            return {
                f.name: plain(getattr(obj, f.name), f.name)
                for f in dataclasses.fields(obj)
                if f.name not in ("source", "notes", "lines")
            }
        if isinstance(obj, tuple):
            return [plain(v, name) for v in obj]
        if isinstance(obj, float) and name in DURATION_KEYS:
            return format_duration(obj)
        if isinstance(obj, dict):
            return {plain(k): format_duration(v) if isinstance(v, float) else plain(v) for k, v in obj.items()}
        return str(obj) if isinstance(obj, Word) else obj  # YAML's safe dumper knows no enum

    return yaml.safe_dump(plain(config), sort_keys=False, default_flow_style=False)
