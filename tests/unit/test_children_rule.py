"""Every child the watchdog starts goes through children.py: its own session, its group ended at its deadline.

A child started anywhere else can outlive its deadline, or leave a grandchild behind when it is ended. The rule is
read from the source, so a new subprocess call elsewhere fails here before it ships.
"""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "watchdogd"
STARTS = re.compile(
    r"subprocess\.(run|Popen|call|check_call|check_output)\(|os\.(system|popen|posix_spawnp?|fork|exec\w*)\("
)


def test_no_child_is_started_outside_children_py() -> None:
    found = [
        f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "children.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if STARTS.search(line)
    ]
    assert found == [], "\n".join(found)
