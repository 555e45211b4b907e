"""Reading a signature table (YAML rows of regex -> cause -> what to do): the shared layer, so the config check can use it.

The table itself, and matching log lines against it, are diagnose.signatures'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Tuple

import yaml


class SignatureError(Exception):
    """A signature table that cannot be used; says which file and row."""


@dataclass(frozen=True)
class Signature:
    pattern: re.Pattern[str]
    cause: str
    what_to_do: str
    alert: bool = True


def load_table(path: str) -> Tuple[Signature, ...]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f.read(1024 * 1024))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SignatureError(f"{path}: cannot read the signature table: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("signatures"), list):
        raise SignatureError(f"{path}: a signature table has a 'signatures' list")
    causes = data.get("causes") or {}
    if not isinstance(causes, dict):
        raise SignatureError(f"{path}: 'causes' must map a cause to what to do")
    out: List[Signature] = []
    for index, row in enumerate(data["signatures"]):
        where = f"{path}: signatures[{index}]"
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
