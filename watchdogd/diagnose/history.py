"""Kernel history: per kernel release, how many probes worked and how many hung, first and last seen.

When probes hang on this kernel and worked on another, the probe_hung message says so
("3 of 3 probes hung on 6.1.0-27; 41 of 41 worked on 6.1.0-26"): the operator's first
question after an upgrade. Kept in state_dir/kernels.json (the newest KEEP releases).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

from ..problems import Problem
from ..state import StateError, StateStore

STATE_FILE = "kernels.json"
KEEP = 16


@dataclass
class KernelRecord:
    ok: int = 0
    hung: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0


class KernelHistory:
    def __init__(self, records: Optional[Dict[str, KernelRecord]] = None):
        self.records: Dict[str, KernelRecord] = records or {}
        self.changed = False

    @classmethod
    def load(cls, state: StateStore) -> KernelHistory:
        data = state.read_json(STATE_FILE)
        records: Dict[str, KernelRecord] = {}
        if isinstance(data, dict):
            for release, r in data.items():
                if isinstance(r, dict):
                    try:
                        records[str(release)] = KernelRecord(
                            int(r.get("ok", 0)),
                            int(r.get("hung", 0)),
                            float(r.get("first_seen", 0)),
                            float(r.get("last_seen", 0)),
                        )
                    except (TypeError, ValueError):
                        continue
        return cls(records)

    def save(self, state: StateStore) -> List[Problem]:
        if not self.changed or state.read_only:
            return []
        try:
            state.write_json(STATE_FILE, {k: vars(v) for k, v in self.records.items()}, durable=False)
            self.changed = False
            return []
        except StateError as exc:
            return [exc.problem()]

    def record(self, release: str, hung: bool, now: float) -> None:
        r = self.records.setdefault(release, KernelRecord(first_seen=now))
        if hung:
            r.hung += 1
        else:
            r.ok += 1
        r.last_seen = now
        if len(self.records) > KEEP:
            oldest = min(self.records, key=lambda k: self.records[k].last_seen)
            del self.records[oldest]
        self.changed = True

    def summary(self, release: str) -> Optional[str]:
        """A sentence for the probe_hung message, when this kernel's record says something.

        >>> h = KernelHistory({"6.1.0-27": KernelRecord(0, 3, 1, 3), "6.1.0-26": KernelRecord(41, 0, 0, 1)})
        >>> h.summary("6.1.0-27")
        '3 of 3 probes hung on 6.1.0-27; 41 of 41 worked on 6.1.0-26'
        """
        here = self.records.get(release)
        if here is None or here.hung == 0:
            return None
        text = f"{here.hung} of {here.ok + here.hung} probes hung on {release}"
        others = sorted(
            ((k, r) for k, r in self.records.items() if k != release and r.ok), key=lambda kv: -kv[1].last_seen
        )
        if others:
            k, r = others[0]
            text += f"; {r.ok} of {r.ok + r.hung} worked on {k}"
        return text

    def to_json(self) -> Dict[str, Dict[str, float]]:
        return {k: vars(v) for k, v in self.records.items()}
