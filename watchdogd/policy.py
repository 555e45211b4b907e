"""Decide, pure: which policies fire on which findings, and whether the breaker lets them act.

- A policy fires once per occurrence (kind + subject): a probe hung for a day is
  one occurrence, acted on once, never once per scan.
- `times`/`within`: fires when that many occurrences of its kind began inside the
  window since it last fired; then it needs that many again.
- `cooldown`: the least time between two firings of one policy.
- The breaker: past `limits.actions` executed actions in `limits.per`, actions are
  skipped (remediation paused) until the window has room again.

All of it lives in PolicyState, which round-trips through JSON in state_dir so that
a restarted watchdog neither forgets a count nor repeats an action.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .config import Config, PolicyConfig
from .model import Finding

STATE_FILE = "policy.json"


@dataclass(frozen=True)
class PlannedAction:
    action: str
    policy: str
    finding: Finding
    dry_run: bool


@dataclass
class PolicyState:
    # kind -> {subject: when the occurrence was first seen}
    occurrences: Dict[str, Dict[str, float]] = field(default_factory=dict)
    # policy -> {subject: when it fired on it}
    fired: Dict[str, Dict[str, float]] = field(default_factory=dict)
    last_fired: Dict[str, float] = field(default_factory=dict)
    executed: List[float] = field(default_factory=list)  # times of executed actions (breaker)
    paused: bool = False

    def to_json(self) -> Dict[str, Any]:
        return {
            "occurrences": self.occurrences,
            "fired": self.fired,
            "last_fired": self.last_fired,
            "executed": self.executed,
            "paused": self.paused,
        }

    @classmethod
    def from_json(cls, data: Any) -> PolicyState:
        """Lenient: a state file from an older version, or a damaged one, loses only what is bad."""
        if not isinstance(data, dict):
            return cls()

        def nested(value: Any) -> Dict[str, Dict[str, float]]:
            out: Dict[str, Dict[str, float]] = {}
            if isinstance(value, dict):
                for key, inner in value.items():
                    if isinstance(inner, dict):
                        out[str(key)] = {str(k): float(v) for k, v in inner.items() if isinstance(v, (int, float))}
            return out

        last = data.get("last_fired")
        executed = data.get("executed")
        return cls(
            occurrences=nested(data.get("occurrences")),
            fired=nested(data.get("fired")),
            last_fired={str(k): float(v) for k, v in last.items() if isinstance(v, (int, float))} if isinstance(last, dict) else {},
            executed=[float(t) for t in executed if isinstance(t, (int, float))] if isinstance(executed, list) else [],
            paused=bool(data.get("paused", False)),
        )


class PolicyEngine:
    def __init__(self, config: Config, state: Optional[PolicyState] = None):
        self.policies: Tuple[PolicyConfig, ...] = config.policies
        self.limit = config.limits.actions
        self.per = config.limits.per
        self.dry_run = config.dry_run
        self.state = state or PolicyState()
        self._memory = max([p.within for p in self.policies] + [self.per, 86400.0])

    # ---- occurrences ---------------------------------------------------------------
    def observe(self, findings: Sequence[Finding], now: float) -> None:
        """Note new occurrences, and forget closed ones older than any window."""
        open_keys = {f.key for f in findings}
        for f in findings:
            self.state.occurrences.setdefault(f.kind, {}).setdefault(f.subject, now)
        horizon = now - self._memory
        for kind, subjects in self.state.occurrences.items():
            for subject in [s for s, t in subjects.items() if t < horizon and (kind, s) not in open_keys]:
                del subjects[subject]
        open_subjects = {f.subject for f in findings}
        for fired in self.state.fired.values():
            for subject in [s for s, t in fired.items() if t < horizon and s not in open_subjects]:
                del fired[subject]

    def _count_since(self, policy: PolicyConfig, now: float) -> int:
        since = max(now - policy.within, self.state.last_fired.get(policy.name, float("-inf")))
        return sum(1 for t in self.state.occurrences.get(policy.on, {}).values() if t > since)

    # ---- deciding ----------------------------------------------------------------------
    def decide(self, findings: Sequence[Finding], now: float, dry_run: bool = False) -> List[PlannedAction]:
        """The actions to take now, in policy order (so a kill comes before a restart)."""
        self.observe(findings, now)
        # while the breaker holds, only alert-only policies fire; the others are not
        # marked fired, so they act once the window has room again
        held = self.state.paused and self._in_window(now) >= self.limit
        planned: List[PlannedAction] = []
        for policy in self.policies:
            if held and any(a != "alert" for a in policy.do):
                continue
            fired = self.state.fired.setdefault(policy.name, {})
            for finding in findings:
                if finding.kind != policy.on or finding.subject in fired:
                    continue
                if policy.times > 1 and self._count_since(policy, now) < policy.times:
                    continue
                last = self.state.last_fired.get(policy.name)
                if policy.cooldown and last is not None and now - last < policy.cooldown:
                    continue
                fired[finding.subject] = now
                self.state.last_fired[policy.name] = now
                is_dry = dry_run or self.dry_run or policy.dry_run
                planned.extend(PlannedAction(a, policy.name, finding, is_dry) for a in policy.do)
                if policy.times > 1:
                    break  # one firing per threshold crossing, not one per open finding
        return planned

    def unfire(self, policy: str, subject: str) -> None:
        """An action the breaker held back: let the policy fire on that subject again later."""
        self.state.fired.get(policy, {}).pop(subject, None)

    # ---- the breaker -----------------------------------------------------------------
    def _in_window(self, now: float) -> int:
        self.state.executed = [t for t in self.state.executed if t > now - self.per]
        return len(self.state.executed)

    def admit(self, now: float) -> bool:
        """May one more action run now? Records it when it may."""
        if self._in_window(now) >= self.limit:
            return False
        self.state.executed.append(now)
        return True

    def breaker_transition(self, now: float, wanted_more: bool) -> Optional[str]:
        """'paused' or 'resumed' once, when the breaker changes; else None."""
        full = self._in_window(now) >= self.limit
        if wanted_more and full and not self.state.paused:
            self.state.paused = True
            return "paused"
        if self.state.paused and not full:
            self.state.paused = False
            return "resumed"
        return None
