"""What an action did: one shape for every action (the records, the journal and the tests read it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from ..words import Word


class Result(Word):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"  # not done: the re-check said no, or a budget held it back
    DRY_RUN = "dry_run"


@dataclass(frozen=True)
class ActionResult:
    result: Result
    detail: str
    pids: Tuple[int, ...] = ()  # the processes it touched

    @classmethod
    def ok(cls, detail: str, pids: Tuple[int, ...] = ()) -> ActionResult:
        return cls(Result.OK, detail, pids)

    @classmethod
    def failed(cls, detail: str, pids: Tuple[int, ...] = ()) -> ActionResult:
        return cls(Result.FAILED, detail, pids)

    @classmethod
    def skipped(cls, detail: str) -> ActionResult:
        return cls(Result.SKIPPED, detail)
