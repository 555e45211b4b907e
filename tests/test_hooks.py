"""Hooks: the operator's own programs, told once when VM starts become blocked and once when they are not.

Against a real session libvirtd: a replayed hang opens vm_starts_blocked; a recording hook is
run exactly once with `open` (the event as JSON on its stdin, naming probe_hung) and once with
`resolved`; a hook that never returns is ended at its timeout and reported, and holds up
neither the other hook nor the kill. A hook that others could rewrite is refused at load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List

from conftest import run_cli
from harness.fixtures import StartDaemon, WriteConfig
from harness.journald import Journald
from harness.sandbox import LibvirtSandbox
from harness.wait import wait_for

RECORDER = """#!/usr/bin/python3
import json, os, sys
with open(sys.argv[1], "a") as out:
    out.write(json.dumps({"argv": sys.argv[2:], "state": os.environ.get("KVMWD_STATE"),
                          "on": os.environ.get("KVMWD_ON"), "event": json.load(sys.stdin)}) + "\\n")
"""


def program(path: Path, text: str, mode: int = 0o755) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    return path


def calls(record: Path) -> List[Dict[str, Any]]:
    try:
        return [json.loads(line) for line in record.read_text().splitlines()]
    except FileNotFoundError:
        return []


def test_a_hang_runs_each_hook_once_each_way_and_a_hook_that_hangs_holds_up_nothing(
    journald: Journald,
    libvirt: LibvirtSandbox,
    state_dir: Path,
    tmp_path: Path,
    write_config: WriteConfig,
    start_daemon: StartDaemon,
) -> None:
    record = tmp_path / "calls.jsonl"
    recorder = program(tmp_path / "hooks" / "record", RECORDER)
    stuck = program(tmp_path / "hooks" / "never-returns", "#!/bin/sh\nexec sleep 3600\n")
    hooks = [
        {"name": "stuck", "on": "vm_starts_blocked", "run": [str(stuck)], "timeout": "2s"},
        {"name": "tell", "on": "vm_starts_blocked", "run": [str(recorder), str(record), "--from-stdin"]},
    ]
    daemon = start_daemon(write_config(libvirt.daemon_config(state_dir, hooks=hooks)))
    daemon.wait_journal("started")
    waiting = libvirt.hang("hang-init", count=1)
    [hung] = daemon.wait_journal("probe_hung", timeout=60, KVMWD_STATE="open")
    [kill] = daemon.wait_journal("action", timeout=30, KVMWD_ACTION="kill_probe")
    assert kill["KVMWD_RESULT"] == "ok", kill["MESSAGE"]
    killed_after_s = (int(kill["__REALTIME_TIMESTAMP"]) - int(hung["__REALTIME_TIMESTAMP"])) / 1e6
    waiting.wait(60)

    [told_open] = wait_for(lambda: calls(record), 30, "the recording hook run with open")
    assert told_open["state"] == "open" and told_open["on"] == "vm_starts_blocked"
    assert told_open["argv"] == ["--from-stdin"], "argv is the config's alone"
    event = told_open["event"]
    assert event["KVMWD_EVENT"] == "vm_starts_blocked" and event["KVMWD_STATE"] == "open"
    assert [r["kind"] for r in json.loads(event["KVMWD_REASONS"])] == ["probe_hung"]
    [timed_out, *_] = daemon.wait_journal("hook", timeout=30, KVMWD_HOOK="stuck", KVMWD_RESULT="timeout")
    assert "ended at its timeout (2s)" in timed_out["MESSAGE"]
    print(f"the kill came {killed_after_s:.2f} s after probe_hung, beside a hook that never returns")
    assert killed_after_s < 2, "the kill went its own way (kill_grace is 5 s; the hung hook's timeout 2 s)"

    daemon.wait_journal("vm_starts_blocked", timeout=60, KVMWD_STATE="resolved")
    wait_for(lambda: len(calls(record)) >= 2, 30, "the recording hook run with resolved")
    assert [c["state"] for c in calls(record)] == ["open", "resolved"], "once each way"
    assert [e["KVMWD_RESULT"] for e in daemon.journal_events("hook", KVMWD_HOOK="tell")] == ["ok", "ok"]


def test_a_hook_another_user_could_rewrite_is_refused_at_load(tmp_path: Path, write_config: WriteConfig) -> None:
    writable = program(tmp_path / "hooks" / "tell", "#!/bin/sh\nexit 0\n", mode=0o777)
    config = write_config(
        {"state_dir": str(tmp_path / "state"), "hooks": [{"name": "x", "on": "probe_hung", "run": [str(writable)]}]}
    )
    r = run_cli("config", "check", config)
    assert r.rc != 0 and "hooks[0].run: refused" in r.err + r.out and "writable by its group or others" in r.err + r.out
    relative = write_config({"hooks": [{"name": "x", "on": "probe_hung", "run": ["nova-compute"]}]})
    said = run_cli("config", "check", relative)
    assert said.rc != 0 and "must be an absolute path" in said.err + said.out
