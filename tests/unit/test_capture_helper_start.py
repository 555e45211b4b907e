"""The capture helper starts on what it needs and nothing more.

systemd starts one helper per hung probe while the daemon waits on it with a deadline; on an
emulated or overloaded host, importing the whole CLI first was most of that deadline, and a
helper that answers late leaves a root-run probe's threads unread (its cause unknown).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import List

from harness.cli import REPO

REPORT_MODULES = "import atexit, sys\natexit.register(lambda: sys.stderr.write(' '.join(sorted(sys.modules))))\n"


def launch(argv: List[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The console script's entry with argv, in a Python of its own; its stderr ends with the modules it loaded."""
    code = REPORT_MODULES + f"from watchdogd.service.launcher import entry\nentry({argv!r})\n"
    return subprocess.run(
        [sys.executable, "-c", code], input=stdin, capture_output=True, text=True, cwd=str(REPO), timeout=60
    )


def test_the_capture_helper_answers_without_loading_the_cli_the_config_or_libvirt() -> None:
    request = {"probe_dir": "/nonexistent/qmp-AAAAAA", "members": [[os.getpid(), "daemon"]]}
    done = launch(["capture-helper"], json.dumps(request) + "\n")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["probe_dir"] == request["probe_dir"]
    assert [p["pid"] for p in answer["processes"]] == [os.getpid()], "it read the member it was asked of"
    loaded = set(done.stderr.split())
    assert not loaded & {"watchdogd.service.cli", "watchdogd.config", "libvirt", "yaml", "systemd.journal"}, loaded


def test_every_other_command_still_goes_to_the_cli() -> None:
    done = launch(["--version"])
    assert done.returncode == 0 and done.stdout.startswith("kvm-watchdog "), done.stdout + done.stderr
