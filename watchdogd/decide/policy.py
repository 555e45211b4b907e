"""Decide, pure: which policies fire on which findings, and whether the breaker lets them act.

- A policy fires once per occurrence (kind + subject): a probe hung for a day is
  one occurrence, acted on once, never once per scan.
- `times`/`within`: fires when that many occurrences of its kind began inside the
  window since it last fired; then it needs that many again.
- `cooldown`: the least time between two firings of one policy.
- Trust (docs/THREAT-MODEL.md, decide/grounds.py): host-wide actions (quarantine_cache,
  restart_libvirt) are planned only on findings from below the qemu user (Grounds.HOST),
  and a policy that has one counts only those occurrences toward `times`.
- Budgets (Spend): host-wide actions draw on `limits.actions` in `limits.per`, the breaker:
  past it they are skipped (remediation paused) until the window has room again. Actions
  on forgeable findings draw on `limits.unproven_actions`. Ending libvirt's own hung
  probes draws on neither: a spent budget never stops a kill.
- Memory is bounded: at most MAX_SUBJECTS occurrences per kind and firings per
  policy are remembered (the oldest go first).

All of it lives in PolicyState, which round-trips through JSON in state_dir so that
a restarted watchdog neither forgets a count nor repeats an action.
"""

from __future__ import annotations

import enum
import json
import threading
from dataclasses import dataclass, field
from typing import AbstractSet, Any, Dict, List, Optional, Sequence, Tuple

from ..config import Config, PolicyConfig
from ..model import HOST_WIDE_ACTIONS, ActionName, Finding
from ..typing_compat import Literal

STATE_FILE = "policy.json"
BreakerChange = Literal["paused", "resumed"]  # what breaker_transition reports, once each
MAX_SUBJECTS = 2000  # remembered per kind (occurrences) and per policy (firings)
ENDED = "\x1f"  # an ended occurrence's key: its subject, this, and when it was first seen


class Lane(enum.Enum):
    """Which action worker a finding's actions run on: libvirt's own evidence never waits behind forged work."""

    PROVEN = "proven"
    UNPROVEN = "unproven"

    @classmethod
    def of(cls, finding: Finding) -> Lane:
        return cls.PROVEN if finding.proven else cls.UNPROVEN


ALL_LANES = frozenset(Lane)


class Spend(enum.Enum):
    """The budget an action draws on: the one model of who pays for what."""

    HOST_WIDE = "limits.actions"  # quarantine_cache, restart_libvirt: the breaker
    UNPROVEN = "limits.unproven_actions"  # anything on evidence the qemu user could have made
    NOTHING = "none"  # alerts, and ending libvirt's own probes: never held back


@dataclass(frozen=True)
class PlannedAction:
    action: ActionName
    policy: str
    finding: Finding
    dry_run: bool

    @property
    def lane(self) -> Lane:
        return Lane.of(self.finding)

    @property
    def spends(self) -> Spend:
        return spend_of(self.action, self.finding)


def spend_of(action: ActionName, finding: Finding) -> Spend:
    if action in HOST_WIDE_ACTIONS:
        return Spend.HOST_WIDE
    if action is ActionName.ALERT or finding.proven:
        return Spend.NOTHING
    return Spend.UNPROVEN


def _bounded(subjects: Dict[str, float]) -> None:
    """Forget the oldest entries past MAX_SUBJECTS."""
    if len(subjects) > MAX_SUBJECTS:
        for subject, _ in sorted(subjects.items(), key=lambda kv: kv[1])[: len(subjects) - MAX_SUBJECTS]:
            del subjects[subject]


@dataclass
class PolicyState:
    # kind -> {subject: when the occurrence was first seen}
    occurrences: Dict[str, Dict[str, float]] = field(default_factory=dict)
    # the same, for occurrences from below the qemu user only: what policies with host-wide actions count
    host: Dict[str, Dict[str, float]] = field(default_factory=dict)
    # policy -> {subject: when it fired on it}
    fired: Dict[str, Dict[str, float]] = field(default_factory=dict)
    last_fired: Dict[str, float] = field(default_factory=dict)
    executed: List[float] = field(default_factory=list)  # times of executed host-wide actions (the breaker)
    executed_unproven: List[float] = field(default_factory=list)  # the unproven budget's
    paused: bool = False
    unproven_held: bool = False  # the unproven budget refused an action and is still full

    def to_json(self) -> Dict[str, Any]:
        return {
            "occurrences": self.occurrences,
            "host": self.host,
            "executed_unproven": self.executed_unproven,
            "unproven_held": self.unproven_held,
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

        def times(value: Any) -> List[float]:
            return [float(t) for t in value if isinstance(t, (int, float))] if isinstance(value, list) else []

        last = data.get("last_fired")
        return cls(
            occurrences=nested(data.get("occurrences")),
            host=nested(data.get("host")),  # an older file's "proven" book counted what may no longer count
            fired=nested(data.get("fired")),
            last_fired={str(k): float(v) for k, v in last.items() if isinstance(v, (int, float))}
            if isinstance(last, dict)
            else {},
            executed=times(data.get("executed")),
            executed_unproven=times(data.get("executed_unproven")),
            paused=bool(data.get("paused", False)),
            unproven_held=bool(data.get("unproven_held", False)),
        )


class PolicyEngine:
    def __init__(self, config: Config, state: Optional[PolicyState] = None):
        self.policies: Tuple[PolicyConfig, ...] = config.policies
        self.limit = config.limits.actions
        self.unproven_limit = config.limits.unproven_actions
        self.per = config.limits.per
        self.dry_run = config.dry_run
        self.state = state or PolicyState()
        self._memory = max([p.within for p in self.policies] + [self.per, 86400.0])
        # decide() runs on the loop, admit() on the action lanes: one lock for the state
        self._lock = threading.RLock()

    # ---- occurrences ---------------------------------------------------------------
    def observe(self, findings: Sequence[Finding], now: float) -> None:
        """Note new occurrences, and forget closed ones older than any window.

        An occurrence that ended is kept (it still counts toward `times`) under a key of its own,
        and its subject's firings are forgotten: the next occurrence of the same subject (the
        qemu user's own process in a dir a genuine probe left) is a new one, acted on anew."""
        open_keys = {f.key for f in findings}
        for book in (self.state.occurrences, self.state.host):
            for kind, subjects in book.items():
                for subject in [s for s in subjects if ENDED not in s and (kind, s) not in open_keys]:
                    first_seen = subjects.pop(subject)
                    subjects[f"{subject}{ENDED}{first_seen:.6f}"] = first_seen
        for f in findings:
            self.state.occurrences.setdefault(f.kind, {}).setdefault(f.subject, now)
            if f.host_wide_ok:
                self.state.host.setdefault(f.kind, {}).setdefault(f.subject, now)
        horizon = now - self._memory
        for book in (self.state.occurrences, self.state.host):
            for kind, subjects in book.items():
                for subject in [s for s, t in subjects.items() if t < horizon and (kind, s) not in open_keys]:
                    del subjects[subject]
                _bounded(subjects)
        open_subjects = {f.subject for f in findings}
        for fired in self.state.fired.values():
            for subject in [s for s in fired if s not in open_subjects]:
                del fired[subject]  # that occurrence ended: a new one of the same subject fires again
            _bounded(fired)

    def _count_since(self, policy: PolicyConfig, now: float) -> int:
        since = max(now - policy.within, self.state.last_fired.get(policy.name, float("-inf")))
        book = self.state.host if _host_wide(policy) else self.state.occurrences
        return sum(1 for t in book.get(policy.on, {}).values() if t > since)

    # ---- deciding ----------------------------------------------------------------------
    def decide(
        self, findings: Sequence[Finding], now: float, dry_run: bool = False, lanes: AbstractSet[Lane] = ALL_LANES
    ) -> List[PlannedAction]:
        """The actions to take now, in policy order (so a kill comes before a restart).

        lanes: which lanes may take actions now;
        findings of a busy lane are left for a later call.
        """
        with self._lock:
            self.observe(findings, now)
            # while a budget holds, what would draw on it is not planned (nor marked fired: it acts once the
            # window has room again); the rest of a policy (a kill beside a restart) goes on
            held = {
                Spend.HOST_WIDE: self.state.paused and self._in_window(now, Spend.HOST_WIDE) >= self.limit,
                Spend.NOTHING: False,
            }
            if self.state.unproven_held and self._in_window(now, Spend.UNPROVEN) < self.unproven_limit:
                self.state.unproven_held = False
            held[Spend.UNPROVEN] = self.state.unproven_held
            planned: List[PlannedAction] = []
            for policy in self.policies:
                planned.extend(self._fire(policy, findings, now, dry_run, lanes, held))
            return planned

    def _fire(
        self,
        policy: PolicyConfig,
        findings: Sequence[Finding],
        now: float,
        dry_run: bool,
        lanes: AbstractSet[Lane],
        held: Dict[Spend, bool],
    ) -> List[PlannedAction]:
        fired = self.state.fired.setdefault(policy.name, {})
        planned: List[PlannedAction] = []
        for finding in findings:
            if finding.kind != policy.on or finding.subject in fired or Lane.of(finding) not in lanes:
                continue
            do = [a for a in policy.do if finding.host_wide_ok or a not in HOST_WIDE_ACTIONS]
            if not do:
                continue  # a host-wide policy and evidence in the qemu user's hands: nothing it may do
            waiting = [a for a in do if held[spend_of(a, finding)]]
            if any(a not in HOST_WIDE_ACTIONS for a in waiting):
                continue  # its budget is spent: the policy waits whole, and acts once the window has room
            do = [a for a in do if a not in waiting]  # a paused breaker never stops a kill beside a restart
            if not do:
                continue
            if policy.times > 1 and self._count_since(policy, now) < policy.times:
                continue
            last = self.state.last_fired.get(policy.name)
            if policy.cooldown and last is not None and now - last < policy.cooldown:
                continue
            fired[finding.subject] = now
            self.state.last_fired[policy.name] = now
            is_dry = dry_run or self.dry_run or policy.dry_run
            planned.extend(PlannedAction(a, policy.name, finding, is_dry) for a in do)
            if policy.times > 1:
                break  # one firing per threshold crossing, not one per open finding
        return planned

    def unfire(self, policy: str, subject: str) -> None:
        """An action the breaker held back: let the policy fire on that subject again later."""
        with self._lock:
            self.state.fired.get(policy, {}).pop(subject, None)

    # ---- the breaker -----------------------------------------------------------------
    def _in_window(self, now: float, spend: Spend) -> int:
        if spend is Spend.HOST_WIDE:
            self.state.executed = [t for t in self.state.executed if t > now - self.per]
            return len(self.state.executed)
        if spend is Spend.UNPROVEN:
            self.state.executed_unproven = [t for t in self.state.executed_unproven if t > now - self.per]
            return len(self.state.executed_unproven)
        return 0

    def limit_of(self, spend: Spend) -> Optional[int]:
        return {Spend.HOST_WIDE: self.limit, Spend.UNPROVEN: self.unproven_limit}.get(spend)

    def admit(self, now: float, spend: Spend = Spend.HOST_WIDE) -> bool:
        """May one more action run now, on this budget? Records it when it may."""
        with self._lock:
            limit = self.limit_of(spend)
            if limit is None:
                return True
            if self._in_window(now, spend) >= limit:
                if spend is Spend.UNPROVEN:
                    self.state.unproven_held = True
                return False
            (self.state.executed if spend is Spend.HOST_WIDE else self.state.executed_unproven).append(now)
            return True

    def breaker_transition(self, now: float, wanted_more: bool) -> Optional[BreakerChange]:
        """'paused' or 'resumed' once, when the (proven) breaker changes; else None."""
        with self._lock:
            full = self._in_window(now, Spend.HOST_WIDE) >= self.limit
            if wanted_more and full and not self.state.paused:
                self.state.paused = True
                return "paused"
            if self.state.paused and not full:
                self.state.paused = False
                return "resumed"
            return None

    def snapshot(self) -> Dict[str, Any]:
        """The state as JSON text's object, taken under the lock (a lane may be admitting meanwhile)."""
        with self._lock:
            copied: Dict[str, Any] = json.loads(json.dumps(self.state.to_json()))
            return copied


def _host_wide(policy: PolicyConfig) -> bool:
    return any(a in HOST_WIDE_ACTIONS for a in policy.do)
