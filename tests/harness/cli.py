"""The CLI as an operator calls it: in this process (quick, and its state is the test's) or as the installed
console script (for timing it, or when it must not share the test's state)."""

from __future__ import annotations

import io
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from watchdogd.service.cli import main

from .service import command

REPO = Path(__file__).resolve().parents[2]


@dataclass
class CliResult:
    rc: int
    out: str
    err: str

    @property
    def json(self) -> Dict[str, Any]:
        answer: Dict[str, Any] = json.loads(self.out)
        return answer

    def kinds(self) -> List[str]:
        return sorted(f["kind"] for f in self.json["findings"])

    def finding(self, kind: str) -> Dict[str, Any]:
        found: List[Dict[str, Any]] = [f for f in self.json["findings"] if f["kind"] == kind]
        assert len(found) == 1, f"expected one {kind}, got {self.json['findings']}"
        return found[0]


def run_cli(*argv: str, env: Optional[Dict[str, str]] = None) -> CliResult:
    """The CLI in this process, as an operator would call it."""
    out, err = io.StringIO(), io.StringIO()
    rc = main(list(argv), out=out, err=err, environ=env or {})
    return CliResult(rc, out.getvalue(), err.getvalue())


def run_cli_process(*argv: str, timeout: float = 60, env: Optional[Dict[str, str]] = None) -> CliResult:
    """The CLI as a separate process (for timing it, or when it must not share our state)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    r = subprocess.run([command(), *argv], capture_output=True, text=True, timeout=timeout, env=full_env, cwd=str(REPO))
    return CliResult(r.returncode, r.stdout, r.stderr)
