"""The signature table: a line of a domain's QEMU log -> a cause -> what to do.

Shipped as data (signatures.yaml beside this file), documented there, extended by the
operator's own table (`diagnose.signatures: FILE`, tried first). Patterns are
compiled once at load; a bad one is a clear error naming the file and the row (the
preflight loads the operator's table, so `config check` says so before the daemon runs).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import yaml

from ..trusted_files import UntrustedFileError, read_trusted

SHIPPED = os.path.join(os.path.dirname(__file__), "signatures.yaml")
MAX_TABLE_BYTES = 1024 * 1024
STARTING = re.compile(r"starting up libvirt version")  # libvirt's first line of each start attempt
FAILED = re.compile(r"shutting down, reason=failed")


class SignatureError(Exception):
    """A signature table that cannot be used; says which file and row."""


@dataclass(frozen=True)
class Signature:
    pattern: re.Pattern[str]
    cause: str
    what_to_do: str
    alert: bool = True


def load_table(path: str, section: str = "signatures") -> Tuple[Signature, ...]:
    """One section of a table: `signatures` (QEMU's words: domain logs, probe failures) or `kernel` (the kernel's own
    lines, optional)."""
    try:
        data = yaml.safe_load(read_trusted(path, MAX_TABLE_BYTES).decode("utf-8"))
    except UntrustedFileError as exc:
        raise SignatureError(f"{path}: refused: {exc}") from None
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SignatureError(f"{path}: cannot read the signature table: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("signatures"), list):
        raise SignatureError(f"{path}: a signature table has a 'signatures' list")
    rows = data.get(section) or []
    if not isinstance(rows, list):
        raise SignatureError(f"{path}: '{section}' must be a list of rows")
    causes = data.get("causes") or {}
    if not isinstance(causes, dict):
        raise SignatureError(f"{path}: 'causes' must map a cause to what to do")
    out: List[Signature] = []
    for index, row in enumerate(rows):
        where = f"{path}: {section}[{index}]"
        if not isinstance(row, dict) or not isinstance(row.get("match"), str) or not isinstance(row.get("cause"), str):
            raise SignatureError(f"{where}: needs 'match' (a regex) and 'cause'")
        try:
            pattern = re.compile(row["match"])
        except re.error as exc:
            raise SignatureError(f"{where}: not a valid regex: {exc}") from None
        what = row.get("what_to_do") or causes.get(row["cause"])
        if not isinstance(what, str):
            raise SignatureError(f"{where}: no what_to_do for cause {row['cause']!r} (give one, or a 'causes' entry)")
        out.append(Signature(pattern, row["cause"], " ".join(what.split()), bool(row.get("alert", True))))
    return tuple(out)


def load(extra: Optional[str], section: str = "signatures") -> Tuple[Signature, ...]:
    """The operator's rows first (so they may override), then the shipped ones."""
    return (load_table(extra, section) if extra else ()) + load_table(SHIPPED, section)


def load_or_shipped(extra: Optional[str], section: str = "signatures") -> Tuple[Signature, ...]:
    """As load; the shipped rows alone if the operator's table broke since the config was checked."""
    try:
        return load(extra, section)
    except SignatureError:
        return load(None, section)


KVM_REFUSED = ("kvm_disabled_by_firmware", "kvm_no_hardware_support")  # kernel causes that leave no /dev/kvm


@dataclass(frozen=True)
class Match:
    signature: Signature
    line: str


def match(lines: Sequence[str], table: Sequence[Signature]) -> List[Match]:
    found = []
    for line in lines:
        for sig in table:
            if sig.pattern.search(line):
                found.append(Match(sig, line[:500]))
                break
    return found


UNMATCHED = (
    "probe_failed_unknown",
    "QEMU's words match no signature. Run the binary as libvirt does (`BINARY -S -no-user-config -nodefaults "
    "-nographic -machine none,accel=kvm:tcg -qmp stdio`, as the qemu user) to see it fail, and give the cause a row "
    "of your own with diagnose.signatures.",
)


SILENT = (
    "probe_ended_silently",
    "QEMU said nothing before it ended: it was killed (by hand, the OOM killer, a hung probe's kill) or died without "
    "a word. The next probe tells whether it fails again; `virsh domcapabilities` asks for one.",
)


def explain(words: str, table: Sequence[Signature]) -> Tuple[str, str]:
    """(cause, what to do) for what QEMU said when it failed: the first alerting row that matches a line of it."""
    if not words.strip():
        return SILENT
    hits = [m for m in match(words.splitlines() or [words], table) if m.signature.alert]
    return (hits[0].signature.cause, hits[0].signature.what_to_do) if hits else UNMATCHED
