"""Incident bundles: what a hung probe was doing, kept before anything acts on it.

One JSON file per hung probe under state_dir/incidents/ (the capture, the diagnosis,
the emulator and its package version, the kernel and the last good one), at most
MAX_BYTES each and the newest KEEP of them: evidence for a bug report that survives
the kill.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

from ..problems import Problem
from ..state import StateError, StateStore
from ..timefmt import compact_utc

DIR = "incidents"
KEEP = 20
MAX_BYTES = 256 * 1024


def save(state: StateStore, name: str, bundle: Dict[str, Any], now: float) -> List[Problem]:
    """Write one bundle (trimmed to MAX_BYTES) and prune to KEEP; the problems, if any."""
    if state.read_only:
        return []
    data = json.dumps(bundle, sort_keys=True)
    if len(data) > MAX_BYTES:
        bundle = dict(bundle, capture={"truncated": True, "bytes": len(data)})
    try:
        state.write_json(os.path.join(DIR, f"{compact_utc(now)}-{name}.json"), bundle, durable=False)
    except StateError as exc:
        return [exc.problem()]
    return prune(state)


def prune(state: StateStore) -> List[Problem]:
    root = state.path(DIR)
    try:
        names = sorted(n for n in os.listdir(root) if n.endswith(".json"))
    except OSError:
        return []
    for n in names[: max(0, len(names) - KEEP)]:
        try:
            os.unlink(os.path.join(root, n))
        except OSError as exc:
            return [Problem(f"cannot prune {root}/{n}: {exc.strerror}", f"incidents-prune:{root}")]
    return []


def recent(state: StateStore, limit: int = 5) -> List[Dict[str, Any]]:
    """The newest bundles, newest first (for `diagnose`)."""
    root = state.path(DIR)
    try:
        names = sorted((n for n in os.listdir(root) if n.endswith(".json")), reverse=True)[:limit]
    except OSError:
        return []
    out = []
    for n in names:
        data = state.read_json(os.path.join(DIR, n))
        if isinstance(data, dict):
            out.append(dict(data, file=os.path.join(root, n)))
    return out
