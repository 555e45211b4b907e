"""The signature table: a line of a domain's QEMU log -> a cause -> what to do.

Shipped as data (signatures.yaml beside this file), documented there, extended by the
operator's own table (`diagnose.signatures: FILE`, tried first). Patterns are
compiled once at load; a bad one is a clear error naming the file and the row.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from ..sigtable import Signature, load_table

SHIPPED = os.path.join(os.path.dirname(__file__), "signatures.yaml")
STARTING = re.compile(r"starting up libvirt version")  # libvirt's first line of each start attempt
FAILED = re.compile(r"shutting down, reason=failed")


def load(extra: Optional[str]) -> Tuple[Signature, ...]:
    """The operator's rows first (so they may override), then the shipped ones."""
    return (load_table(extra) if extra else ()) + load_table(SHIPPED)


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

