"""The console script: `kvm-watchdog capture-helper` starts on the few modules it needs, every other command on the CLI.

systemd starts a capture helper for one hung probe while the daemon waits on it with a deadline
(observe/capture_helper.py). Importing the whole CLI first (the config, the journal, libvirt's
bindings, every stage) took five times what the helper itself needs: on an emulated or overloaded
host that was most of the deadline, and a helper that answers late leaves the daemon reading
without ptrace (a root-run probe's threads unreadable, its cause unknown). So that one command is
told apart before the CLI is imported; `kvm-watchdog capture-helper --help` and the rest go to
service/cli.py.
"""

from __future__ import annotations

import sys
from typing import List, Optional


def entry(argv: Optional[List[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args == ["capture-helper"]:
        from ..observe.capture_helper import serve_stdio

        sys.exit(serve_stdio())
    from .cli import main

    sys.exit(main(args))
