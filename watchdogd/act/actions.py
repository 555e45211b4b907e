"""Act: the only code that signals processes, removes dirs, moves files or restarts libvirt.

Each action re-observes what it is about to touch, right before touching it, and
re-checks the safety rule on that fresh read: a decision made on the previous scan
is never trusted on its own. Actions live in one registry (name -> class); none is
loaded from anywhere else.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..config import Config
from ..decide.policy import BreakerChange, Lane, PlannedAction, PolicyEngine, Spend
from ..fsafe import BirthTime, PathRefused
from ..kinds import Kind
from ..model import ACTIONS, ActionName, Finding, Probe, ProbeMember, Role
from ..observe.scan import Scanner
from ..safety import Protected, why_not_member
from ..thresholds import is_hung, why_not_stale
from ..typing_compat import Protocol
from .probe_dir_removal import NotLibvirtsError, RefusedError, remove_probe_dir
from .process_ender import ProcessEnder
from .quarantine import quarantine_cache
from .restart import LibvirtRestarter
from .result import ActionResult, Result


class Action(Protocol):
    """One remediation step: what it would do (dry run), and doing it (re-checking what it touches first)."""

    def plan(self, finding: Finding) -> str: ...

    def run(self, finding: Finding) -> ActionResult: ...


@dataclass(frozen=True)
class ActionRecord:
    """An action on a finding, what it did, and when."""

    action: ActionName
    policy: str
    finding: Finding
    done: ActionResult
    dry_run: bool
    at: float = 0.0

    @property
    def subject(self) -> str:
        return self.finding.subject

    @property
    def kind(self) -> Kind:
        return self.finding.kind

    @property
    def result(self) -> Result:
        return self.done.result

    @property
    def detail(self) -> str:
        return self.done.detail

    @property
    def pids(self) -> Tuple[int, ...]:
        return self.done.pids

    @property
    def changed_something(self) -> bool:
        """Done for real (not a dry run, not only an alert): worth looking at the host again."""
        return self.result is Result.OK and not self.dry_run and self.action is not ActionName.ALERT

    def to_json(self) -> Dict[str, Any]:
        return {
            "action": self.action,
            "policy": self.policy,
            "subject": self.subject,
            "result": self.result,
            "dry_run": self.dry_run,
            "detail": self.detail,
            "finding": self.kind,
            "pids": list(self.pids),
        }


class KillProbe:
    """End a hung probe: its daemon first (that releases libvirt), then the first process if it still waits."""

    def __init__(self, config: Config, scanner: Scanner, ender: ProcessEnder):
        self.config = config
        self.scanner = scanner
        self.ender = ender

    def _probes(self, finding: Finding) -> Tuple[List[Probe], Protected, float]:
        obs = self.scanner.recheck()
        protected = Protected(self.scanner.own_pid, frozenset(obs.libvirt_pids))
        boot_wall = obs.taken_wall - obs.uptime_s
        if finding.kind == Kind.DOMCAPS_HUNG:
            hung = [p for p in obs.probes if is_hung(p, self.config.detect)]
            return hung, protected, boot_wall
        path = finding.evidence.probe_path()
        return [p for p in obs.probes if p.path == path], protected, boot_wall

    def plan(self, finding: Finding) -> str:
        if finding.kind == Kind.PROBE_DEFUNCT and finding.evidence.probe_path() is None:
            return "nothing: the zombies' parent is libvirt itself; only restart_libvirt resolves that"
        probes, _, _ = self._probes(finding)
        if not probes:
            return "nothing: the probe has ended"
        return "; ".join(
            f"SIGTERM then SIGKILL {', '.join(f'{m.role.value} {m.process.pid}' for m in p.live_members)} of {p.path}"
            for p in probes
        )

    def run(self, finding: Finding) -> ActionResult:
        if finding.kind == Kind.PROBE_DEFUNCT and finding.evidence.probe_path() is None:
            return ActionResult.skipped("the zombies' parent is libvirt itself; only restart_libvirt resolves that")
        probes, protected, boot_wall = self._probes(finding)
        if not probes:
            return ActionResult.ok("the probe had already ended")
        notes: List[str] = []
        touched: List[int] = []
        failed = False
        names = self.config.detect.emulator_names
        for probe in probes:

            def verify(current: Any, probe: Probe = probe) -> Optional[str]:
                return why_not_member(
                    current, probe.path, probe.made_wall, boot_wall, protected, names, probe.owner_uid
                )

            # the daemon first: ending it is what releases libvirt (the first process only waits on it); then
            # the rest together, one grace for them all, however many the qemu uid added
            daemons = [m for m in probe.live_members if m.role == Role.DAEMON]
            others = [m for m in probe.live_members if m.role != Role.DAEMON]
            failed = self._end(daemons, verify, notes, touched) or failed
            rest = self._still_there(others, notes) if daemons else others  # only once the daemon is gone
            failed = self._end(rest, verify, notes, touched) or failed
        return (ActionResult.failed if failed else ActionResult.ok)("; ".join(notes), tuple(touched))

    def _end(
        self, group: List[ProbeMember], verify: Callable[[Any], Optional[str]], notes: List[str], touched: List[int]
    ) -> bool:
        """End the group together; what happened to each goes into notes. Whether any could not be ended."""
        outcomes = self.ender.end_group([m.process for m in group], verify)
        failed = False
        for member in group:
            outcome = outcomes[member.process.pid]
            touched.append(member.process.pid)
            text = f"{member.role.value} {member.process.pid}: {outcome.how}"
            if outcome.stuck_in_kernel:
                text += f" (in uninterruptible sleep, wchan {outcome.stuck_in_kernel}; not retried)"
            notes.append(text)
            failed = failed or not outcome.ended
        return failed

    def _still_there(self, others: List[ProbeMember], notes: List[str]) -> List[ProbeMember]:
        """The members that did not exit by themselves within a second of the daemon's end (one second for all)."""
        deadline = self.ender.clock() + 1.0  # the ender's own clock, the one wait_gone waits on
        left = []
        for member in others:
            if self.ender.wait_gone(member.process, max(0.0, deadline - self.ender.clock())):
                notes.append(f"{member.role.value} {member.process.pid} exited by itself")
            else:
                left.append(member)
        return left


class RemoveStaleDir:
    def __init__(self, config: Config, scanner: Scanner, birth: BirthTime):
        self.config = config
        self.scanner = scanner
        self.birth = birth

    def _now(self, path: str) -> Optional[Probe]:
        """The probe dir at path as a full re-check sees it right now; None when it is gone."""
        return next((probe for probe in self.scanner.recheck().probes if probe.path == path), None)

    def plan(self, finding: Finding) -> str:
        return f"remove {finding.subject} if it is shaped as libvirt leaves a probe's dir (its qmp.monitor and qmp.pid)"

    def run(self, finding: Finding) -> ActionResult:
        probe = self._now(finding.subject)
        if probe is None:
            return ActionResult.ok("already gone")
        why = why_not_stale(probe, self.config.detect)
        if why:
            return ActionResult.skipped(why)
        try:
            count = remove_probe_dir(finding.subject, self.config.libvirt.probe_dirs, self.birth, probe.made_wall)
        except FileNotFoundError:
            return ActionResult.ok("already gone")
        except NotLibvirtsError as exc:
            return ActionResult.skipped(f"not removed, not a dir libvirt made: {exc}")
        except RefusedError as exc:
            return ActionResult.failed(str(exc))
        except OSError as exc:
            return ActionResult.failed(f"cannot remove: {exc.strerror or exc}")
        return ActionResult.ok(f"removed {count} entr{'y' if count == 1 else 'ies'}")


class QuarantineCache:
    def __init__(self, config: Config, clock: Callable[[], float] = time.time):
        self.config = config
        self.clock = clock

    @property
    def root(self) -> str:
        return os.path.join(self.config.state_dir, "quarantine")

    def plan(self, finding: Finding) -> str:
        return f"move every entry of {self.config.libvirt.cache_dir} to {self.root}/<UTC time>/"

    def run(self, finding: Finding) -> ActionResult:
        try:
            result = quarantine_cache(
                self.config.libvirt.cache_dir, self.root, self.config.actions.quarantine_keep, self.clock()
            )
        except PathRefused as exc:
            return ActionResult.failed(f"refused: {exc.filename}: {PathRefused.WHY}; nothing moved")
        except OSError as exc:
            return ActionResult.failed(f"cannot quarantine: {exc.strerror or exc}; the cache is untouched")
        if not result.moved and not result.failed:
            return ActionResult.ok("the cache was already empty")
        detail = f"moved {len(result.moved)} entr{'y' if len(result.moved) == 1 else 'ies'} to {result.dest}"
        if result.pruned:
            detail += f" (older sets pruned past actions.quarantine_keep: {', '.join(result.pruned)})"
        if result.failed:
            return ActionResult.failed(detail + f"; left in place: {'; '.join(result.failed)}")
        return ActionResult.ok(detail)


class RestartLibvirt:
    def __init__(self, restarter: LibvirtRestarter):
        self.restarter = restarter

    def plan(self, finding: Finding) -> str:
        argv = self.restarter.argv()
        return f"run {' '.join(argv)}" if not isinstance(argv, str) else f"nothing: {argv}"

    def run(self, finding: Finding) -> ActionResult:
        return self.restarter.restart()


class Alert:
    def plan(self, finding: Finding) -> str:
        return "an alert event"

    def run(self, finding: Finding) -> ActionResult:
        return ActionResult.ok(f"alert: {finding.message}")


def build_actions(
    config: Config, scanner: Scanner, ender: ProcessEnder, birth: BirthTime, restarter: LibvirtRestarter
) -> Dict[ActionName, Action]:
    """The registry: every action of model.ACTIONS by its config name, with the collaborators the root made."""
    actions: Dict[ActionName, Action] = {
        ActionName.KILL_PROBE: KillProbe(config, scanner, ender),
        ActionName.REMOVE_STALE_DIR: RemoveStaleDir(config, scanner, birth),
        ActionName.QUARANTINE_CACHE: QuarantineCache(config),
        ActionName.RESTART_LIBVIRT: RestartLibvirt(restarter),
        ActionName.ALERT: Alert(),
    }
    assert set(actions) == set(ACTIONS), "one registry: model.ACTIONS names every action built here"
    return actions


class Actor:
    """Runs planned actions through the breaker; dry-run ones only say what they would do."""

    def __init__(self, actions: Dict[ActionName, Action], engine: PolicyEngine, clock: Callable[[], float] = time.time):
        self.actions = actions
        self.engine = engine
        self.clock = clock

    def execute(self, planned: Sequence[PlannedAction]) -> Tuple[List[ActionRecord], Optional[BreakerChange]]:
        """Records of what was done, and 'paused'/'resumed' when the breaker changed.

        Each action draws on its budget (policy.Spend): host-wide ones on `limits.actions`, those on
        forgeable evidence on `limits.unproven_actions`, kills of libvirt's own probes on none. Actions
        a budget refuses are held back (their policy may fire on them again once the window has room)
        and reported as one `skipped` record per budget, not one per action: a storm of 3,000 stale
        dirs is one line, not 3,000.
        """
        records: List[ActionRecord] = []
        refused: Dict[Spend, List[PlannedAction]] = {Spend.HOST_WIDE: [], Spend.UNPROVEN: []}
        for p in sorted(planned, key=lambda p: p.lane is not Lane.PROVEN):  # proven first: forged work never delays it
            action = self.actions[p.action]
            now = self.clock()
            outcome: ActionResult
            if p.dry_run:
                outcome = ActionResult(Result.DRY_RUN, "would " + action.plan(p.finding))
            elif not self.engine.admit(now, p.spends):
                refused[p.spends].append(p)
                self.engine.unfire(p.policy, p.finding.subject)
                continue
            else:
                try:
                    outcome = action.run(p.finding)
                except Exception as exc:  # an action must never take the daemon down
                    outcome = ActionResult.failed(f"internal error: {type(exc).__name__}: {exc}")
            records.append(ActionRecord(p.action, p.policy, p.finding, outcome, p.dry_run, now))
        for spend, held in refused.items():
            if held:
                records.append(self._held_back(held, spend))
        return records, self.engine.breaker_transition(self.clock(), bool(refused[Spend.HOST_WIDE]))

    def _held_back(self, held: Sequence[PlannedAction], spend: Spend) -> ActionRecord:
        first = held[0]
        more = f"; {len(held) - 1} more action(s) held back with it" if len(held) > 1 else ""
        if spend is Spend.HOST_WIDE:
            detail = (
                f"remediation paused: {self.engine.limit} host-wide actions within {self.engine.per:g}s "
                f"(limits.actions){more}; kills of hung probes go on"
            )
        else:
            detail = (
                f"unproven budget spent: {self.engine.unproven_limit} actions on evidence the qemu user could have "
                "made, within "
                f"{self.engine.per:g}s (limits.unproven_actions){more}; remediation of proven probes goes on"
            )
        return ActionRecord(
            first.action, first.policy, first.finding, ActionResult.skipped(detail), False, self.clock()
        )
