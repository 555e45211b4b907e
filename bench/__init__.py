"""`make bench`. The test harness (sandboxed libvirt, journald, the daemon as a process) lives in tests/."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
