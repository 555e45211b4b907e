"""Which config file to read, and its text: a regular file only root can write (trusted_files), at most 1 MiB,
UTF-8; a clear error otherwise."""

from __future__ import annotations

from typing import Mapping, Optional, Tuple

from ..trusted_files import UntrustedFileError, read_trusted
from .reader import ConfigError, ConfigProblem

DEFAULT_PATH = "/etc/kvm-watchdog/config.yaml"
ENV_VAR = "KVM_WATCHDOG_CONFIG"
MAX_BYTES = 1024 * 1024


def resolve_path(cli_path: Optional[str], environ: Mapping[str, str]) -> Tuple[str, bool]:
    """The config file to read, and whether the operator named it (then it must exist)."""
    if cli_path:
        return cli_path, True
    if environ.get(ENV_VAR):
        return environ[ENV_VAR], True
    return DEFAULT_PATH, False


def read_text(path: str, required: bool) -> Optional[str]:
    """The file's text; None when it is the default file and absent (all defaults)."""
    try:
        raw = read_trusted(path, MAX_BYTES + 1)
    except UntrustedFileError as exc:
        raise ConfigError([ConfigProblem(path, 0, "", f"refused: {exc}")]) from None
    except FileNotFoundError:
        if not required:
            return None
        raise ConfigError([ConfigProblem(path, 0, "", "no such file")]) from None
    except OSError as exc:
        raise ConfigError([ConfigProblem(path, 0, "", f"cannot read: {exc.strerror or exc}")]) from None
    if len(raw) > MAX_BYTES:
        raise ConfigError([ConfigProblem(path, 0, "", "larger than 1 MiB; not a config file")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(path, 0, "", f"not UTF-8 text (byte {exc.start})")]) from None
