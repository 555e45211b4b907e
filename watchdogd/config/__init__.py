"""The YAML config: defaults for every key, and errors that say FILE:LINE and what is wrong.

Unknown keys are errors, not warnings: a typo in a root daemon's policy (``kil_probe``)
must not silently turn remediation off. `parse_config` is pure; what a config asks of the
host it runs on is checked by the composition root's preflight (service/preflight.py).
"""

from .choices import EventsTo, KvmSelftest, LatencyWhen
from .files import DEFAULT_PATH, ENV_VAR, read_text, resolve_path
from .reader import ConfigError, ConfigProblem, parse_config
from .schema import (
    DEFAULT_POLICIES,
    ActionsConfig,
    Config,
    DetectConfig,
    DiagnoseConfig,
    HookConfig,
    LatencyConfig,
    LibvirtConfig,
    LimitsConfig,
    MetricsConfig,
    PolicyConfig,
    to_yaml,
)

__all__ = [
    "DEFAULT_PATH",
    "DEFAULT_POLICIES",
    "ENV_VAR",
    "ActionsConfig",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "DetectConfig",
    "DiagnoseConfig",
    "EventsTo",
    "HookConfig",
    "KvmSelftest",
    "LatencyConfig",
    "LatencyWhen",
    "LibvirtConfig",
    "LimitsConfig",
    "MetricsConfig",
    "PolicyConfig",
    "parse_config",
    "read_text",
    "resolve_path",
    "to_yaml",
]
