"""Operators' hooks: a program run once when what it is `on` opens and once when it resolves, never on the loop.

What a hook is told is an event (the host condition vm_starts_blocked, or a finding kind), as
JSON on its stdin, with KVMWD_STATE (open, resolved), KVMWD_ON and KVMWD_SUBJECT in a minimal
environment; its argv is the config's alone, never an untrusted string. Each hook has a thread
of its own, so one that hangs holds up no other hook, no kill and no scan; its program runs
through children.run_with_timeout (a session of its own, its whole group ended at `timeout`),
by the socket-activated hook runner where there is one (hook_runner: it has the network the
daemon's unit has not).
Each run is a `hook` event with its result (ok, failed, timeout). One that did not succeed is
run again after RETRY_FIRST_S, doubling up to RETRY_MAX_S, until it does or what it was to tell
changes: a host is never left disabled by a lost `resolved`. What each hook last told, and what
it still has to, is kept in state_dir/hooks.json: a restart re-tells only a change.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .. import children
from ..config import HookConfig
from ..report.events import NOTICE, WARNING, Event, EventSink, lifecycle
from ..state import StateError, StateStore
from . import hook_runner
from .hook_runner import HookResult

STATE_FILE = "hooks.json"
RETRY_FIRST_S = 5.0
RETRY_MAX_S = 300.0
# how long a stop waits for the hooks' workers: the runner sees the cancel within 0.2 s, then ends the group
STOP_WAIT_S = 0.5 + children.KILL_WAIT
TOLD = ("open", "resolved")


@dataclass
class Telling:
    """What one hook is to tell about one subject, and how that went so far."""

    state: str  # open, resolved: the latest wanted
    fields: Dict[str, str]  # the event's journal fields: the JSON on stdin
    told: Optional[str] = None  # the state last told with success
    tries: int = 0
    next_at: float = 0.0  # monotonic: when to try (again)

    @property
    def due(self) -> bool:
        return self.state != self.told


def hook_ran(hook: HookConfig, telling: Telling, result: HookResult, detail: str) -> Event:
    message = f"Hook {hook.name} ({telling.fields.get('KVMWD_EVENT')} {telling.state}): {result.value}"
    return lifecycle(
        "hook",
        f"{message}{': ' + detail if detail else ''}.",
        NOTICE if result is HookResult.OK else WARNING,
        hook=hook.name,
        on=hook.on,
        state=telling.state,
        result=result.value,
        detail=detail,
        subject=telling.fields.get("KVMWD_SUBJECT", ""),
    )


class HookWorker:
    """One hook's thread: runs what is due, the newest state per subject, retrying with backoff."""

    def __init__(self, hook: HookConfig, hooks: Hooks):
        self.hook = hook
        self.hooks = hooks
        self.book: Dict[str, Telling] = {}  # subject -> what to tell
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._work, name=f"kvmwd-hook-{hook.name}", daemon=True)

    def tell(self, subject: str, state: str, fields: Dict[str, str]) -> None:
        with self.hooks.lock:
            current = self.book.get(subject)
            if current is not None and current.state == state:
                return  # already wanted (a repeat of the same event, or a restart): told once
            told = current.told if current is not None else None
            self.book[subject] = Telling(state, fields, told)
        self.wake.set()

    def _next(self) -> Tuple[Optional[str], float]:
        """The subject due soonest, and how long until it is due (0: now)."""
        with self.hooks.lock:
            due = [(t.next_at, s) for s, t in self.book.items() if t.due]
        if not due:
            return None, 3600.0
        at, subject = min(due)
        return subject, max(0.0, at - time.monotonic())

    def _work(self) -> None:
        while not self.hooks.cancel.is_set():
            subject, wait = self._next()
            if subject is None or wait > 0:
                self.wake.wait(min(wait, 3600.0))
                self.wake.clear()
                continue
            with self.hooks.lock:
                telling = self.book[subject]
                state, fields = telling.state, dict(telling.fields)
            result, detail = hook_runner.run(self.hook, state, fields, self.hooks.cancel)
            with self.hooks.lock:
                current = self.book.get(subject)
                if current is not None and current.state == state:  # not superseded while it ran
                    if result is HookResult.OK:
                        current.told, current.tries = state, 0
                    else:
                        current.tries += 1
                        current.next_at = time.monotonic() + min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (current.tries - 1))
                    if current.told == "resolved" and not current.due:
                        del self.book[subject]  # told to the end: nothing left to remember
            self.hooks.sink.emit(hook_ran(self.hook, Telling(state, fields), result, detail))
            self.hooks.save()


class Hooks:
    """Every hook of the config, listening to the event sink; the book of what each told, kept in the state dir."""

    def __init__(self, hooks: Sequence[HookConfig], sink: EventSink, state: StateStore):
        self.sink = sink
        self.state = state
        self.lock = threading.Lock()
        self._saving = threading.Lock()
        self.cancel = threading.Event()
        self.workers: Dict[str, HookWorker] = {}
        self.configure(hooks)

    def configure(self, hooks: Sequence[HookConfig]) -> None:
        """A (re)load: workers for the hooks named, each keeping its book; the others stop taking work."""
        saved = self.state.read_json(STATE_FILE) if not self.workers else None
        for hook in hooks:
            worker = self.workers.get(hook.name)
            if worker is None:
                worker = self.workers[hook.name] = HookWorker(hook, self)
                worker.book = _book_from(saved.get(hook.name) if isinstance(saved, dict) else None)
                worker.thread.start()
            worker.hook = hook
        for name in [n for n in self.workers if n not in {h.name for h in hooks}]:
            self.workers.pop(name).book.clear()  # its thread idles: nothing is due any more

    def on_event(self, event: Event, fields: Dict[str, str]) -> None:
        """The sink's listener: an event some hook is on, opening or resolving (never blocks)."""
        state = fields.get("KVMWD_STATE")
        if event.kind == "hook" or state not in TOLD:
            return
        for worker in list(self.workers.values()):
            if worker.hook.on == event.kind:
                worker.tell(fields.get("KVMWD_SUBJECT") or event.kind, state or "", fields)

    def save(self) -> None:
        with self.lock:
            doc = {
                name: {s: {"state": t.state, "told": t.told, "fields": t.fields} for s, t in w.book.items()}
                for name, w in self.workers.items()
            }
        with self._saving:  # one writer of hooks.json at a time: every hook's thread saves
            try:
                self.state.write_json(STATE_FILE, doc, durable=False)
            except StateError:
                pass  # told by the state's own collector; the hooks go on from memory

    def stop(self, wait: float = STOP_WAIT_S) -> None:
        """Cancel every hook; a hook running here has its process group ended by its worker, which is waited for
        (at most `wait` in all), so no hook outlives the daemon outside systemd's cgroup either."""
        self.cancel.set()
        for worker in self.workers.values():
            worker.wake.set()
        end = time.monotonic() + wait
        for worker in self.workers.values():
            worker.thread.join(max(0.0, end - time.monotonic()))

    def pending(self) -> List[str]:
        with self.lock:
            return [f"{n}:{s}" for n, w in self.workers.items() for s, t in w.book.items() if t.due]


def _book_from(saved: object) -> Dict[str, Telling]:
    """A hook's book as the last daemon left it: what was told stays told; what was not is due again."""
    book: Dict[str, Telling] = {}
    if isinstance(saved, dict):
        for subject, item in saved.items():
            if isinstance(item, dict) and item.get("state") in TOLD and isinstance(item.get("fields"), dict):
                told = item.get("told") if item.get("told") in TOLD else None
                fields = {str(k): str(v) for k, v in item["fields"].items()}
                book[str(subject)] = Telling(str(item["state"]), fields, told)
    return book
