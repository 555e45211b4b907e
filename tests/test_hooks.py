"""Hooks: the operator's own programs, told once when VM starts become blocked and once when they are not.

Against a real session libvirtd: a replayed hang opens vm_starts_blocked; a recording hook is
run exactly once with `open` (the event as JSON on its stdin, naming probe_hung) and once with
`resolved`; a hook that never returns is ended at its timeout and reported, and holds up
neither the other hook nor the kill. A hook that others could rewrite is refused at load.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any, Dict, List

from harness.cli import REPO, run_cli
from harness.fixtures import StartDaemon, WriteConfig
from harness.journald import Journald
from harness.sandbox import LibvirtSandbox, alive, cmdline_of
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
    pids = tmp_path / "stuck.pids"
    stuck = program(tmp_path / "hooks" / "never-returns", f"#!/bin/sh\necho $$ >> {pids}\nexec sleep 3600\n")
    hooks = [
        {"name": "stuck", "on": "vm_starts_blocked", "run": [str(stuck)], "timeout": "2s"},
        {"name": "tell", "on": "vm_starts_blocked", "run": [str(recorder), str(record), "--from-stdin"]},
        {"name": "still-running", "on": "vm_starts_blocked", "run": [str(stuck)], "timeout": "1h"},
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

    def told() -> List[Dict[str, Any]]:  # the hook wrote its record before it exited; its result is told after
        runs = daemon.journal_events("hook", KVMWD_HOOK="tell")
        return runs if len(runs) >= 2 else []

    assert [e["KVMWD_RESULT"] for e in wait_for(told, 30, "the second run told")] == ["ok", "ok"]

    # the daemon stops while a hook still runs: the hook's process ends with it, never left behind
    started = wait_for(lambda: len(pids.read_text().split()) >= 3 and pids.read_text().split(), 30, "3 stuck runs")
    try:
        assert daemon.stop() == 0
        wait_for(lambda: not any(alive(int(pid)) for pid in started), 10, "every stuck hook's process ended")
    finally:  # what a failure would leave: ours, by pid, while it is still our sleep
        for pid in map(int, started):
            with contextlib.suppress(OSError):
                if cmdline_of(pid) == "sleep 3600":
                    os.kill(pid, signal.SIGKILL)


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


# ---- the shipped hooks ---------------------------------------------------------------------------------------------

HOOKS = REPO / "packaging" / "hooks"
OPEN = {
    "KVMWD_EVENT": "vm_starts_blocked",
    "KVMWD_STATE": "open",
    "KVMWD_REASONS": json.dumps(
        [{"kind": "probe_hung", "subject": "/var/lib/libvirt/qemu/qmp-AAAAAA", "message": "m"}]
    ),
    "MESSAGE": "VM starts are blocked on this host: probe_hung /var/lib/libvirt/qemu/qmp-AAAAAA.",
}
RESOLVED = {"KVMWD_EVENT": "vm_starts_blocked", "KVMWD_STATE": "resolved", "KVMWD_REASONS": "[]", "MESSAGE": "ok"}


def shipped(name: str, event: Dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KVMWD_STATE=event["KVMWD_STATE"])
    return subprocess.run(
        [str(HOOKS / name), *args], input=json.dumps(event), capture_output=True, text=True, env=env, timeout=30
    )


def test_the_shipped_hooks_say_in_a_dry_run_what_they_would_do_each_way() -> None:
    disable = shipped("nova-compute", OPEN, "--dry-run", "--host", "hv1")
    assert disable.returncode == 0 and disable.stdout.strip() == (
        "openstack compute service set --disable --disable-reason "
        "'kvm-watchdog: VM starts blocked (probe_hung)' hv1 nova-compute"
    ), disable.stdout + disable.stderr
    enable = shipped("nova-compute", RESOLVED, "--dry-run", "--host", "hv1").stdout
    assert "compute service list --service nova-compute --host hv1" in enable and "--enable hv1 nova-compute" in enable
    mark = shipped("kubernetes-node", OPEN, "--dry-run", "--node", "n1").stdout.splitlines()
    assert "patch node n1 --subresource=status" in mark[0] and '"type": "KvmVmStartsBlocked"' in mark[0]
    assert '"status": "True"' in mark[0] and mark[1].endswith(
        "taint nodes n1 kvm-watchdog/vm-starts-blocked=true:NoSchedule --overwrite"
    )
    unmark = shipped("kubernetes-node", RESOLVED, "--dry-run", "--node", "n1").stdout.splitlines()
    assert '"status": "False"' in unmark[0] and unmark[1].endswith(
        "taint nodes n1 kvm-watchdog/vm-starts-blocked:NoSchedule-"
    )


def test_nova_compute_never_enables_a_service_an_operator_disabled_for_a_reason_of_their_own(tmp_path: Path) -> None:
    """The openstack CLI stood in for by a recorder that answers the service list as nova would."""
    calls_file = tmp_path / "openstack-calls"
    for reason, enabled in (("maintenance: new DIMMs", False), ("kvm-watchdog: VM starts blocked (probe_hung)", True)):
        listing = json.dumps(
            [{"Binary": "nova-compute", "Host": "hv1", "Status": "disabled", "Disabled Reason": reason}]
        )
        stub = program(
            tmp_path / "openstack",
            f"#!/bin/sh\necho \"$*\" >> {calls_file}\ncase \"$*\" in *' list '*) echo '{listing}';; esac\n",
        )
        calls_file.write_text("")
        done = shipped("nova-compute", RESOLVED, "--host", "hv1", "--openstack", str(stub), "--env", "/nonexistent")
        assert done.returncode == 0, done.stdout + done.stderr
        enables = [c for c in calls_file.read_text().splitlines() if "--enable" in c]
        assert bool(enables) == enabled, (reason, calls_file.read_text(), done.stdout)


def test_a_failed_resolved_is_retried_until_it_succeeds_and_a_restart_re_tells_only_a_change(tmp_path: Path) -> None:
    """A lost `resolved` must never leave a host disabled; what was told stays told across a restart."""
    from watchdogd.config import EventsTo, HookConfig
    from watchdogd.report.events import EventSink, lifecycle
    from watchdogd.service.hooks import Hooks
    from watchdogd.state import StateStore

    record, failures = tmp_path / "calls.jsonl", tmp_path / "fail-once"
    failures.write_text("x")
    flaky = program(
        tmp_path / "hooks" / "flaky",
        RECORDER + f"import os; p = {str(failures)!r}\nif os.path.exists(p):\n    os.unlink(p)\n    sys.exit(3)\n",
    )
    hook = HookConfig(name="tell", on="vm_starts_blocked", run=(str(flaky), str(record)), timeout=10.0)
    sink = EventSink(EventsTo.STDERR, None, stream=open(tmp_path / "events.jsonl", "w"))
    state = StateStore(str(tmp_path / "state"))
    hooks = Hooks([hook], sink, state)
    sink.listeners.append(hooks.on_event)
    try:
        sink.emit(lifecycle("vm_starts_blocked", "resolved", state="resolved", reasons="[]"))
        wait_for(lambda: len(calls(record)) >= 2, 30, "a failed run, then the retry")
        wait_for(lambda: not hooks.pending(), 10, "nothing left to tell")
    finally:
        hooks.stop()
    results = [
        json.loads(line)["KVMWD_RESULT"]
        for line in (tmp_path / "events.jsonl").read_text().splitlines()
        if '"hook"' in line
    ]
    assert results == ["failed", "ok"], results

    sink.emit(lifecycle("vm_starts_blocked", "open", state="open", reasons="[]"))  # after stop: nobody listens to it
    again = Hooks([hook], sink, state)
    try:
        again.workers["tell"].tell("vm_starts_blocked", "open", {"KVMWD_STATE": "open"})
        wait_for(lambda: len(calls(record)) >= 3 and not again.pending(), 30, "a change is told after a restart")
        again.workers["tell"].tell("vm_starts_blocked", "open", {"KVMWD_STATE": "open"})
        assert not again.pending() and len(calls(record)) == 3, "the same state again: told once"
    finally:
        again.stop()


def test_the_hook_runner_runs_only_a_hook_of_its_own_config_and_never_a_command_it_is_sent(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    """What kvm-watchdog-hook@.service runs for the daemon (whose unit has no network): asked by name over a socket
    only root may use, it runs its own config's hook, and refuses a request naming another program."""
    from harness.service import command

    record = tmp_path / "calls.jsonl"
    recorder = program(tmp_path / "hooks" / "recorder", RECORDER)
    run = [str(recorder), str(record)]
    cfg = write_config(
        {"state_dir": str(tmp_path / "state"), "hooks": [{"name": "tell", "on": "vm_starts_blocked", "run": run}]}
    )

    def ask(request: Dict[str, Any]) -> subprocess.CompletedProcess[str]:
        line = json.dumps(request) + "\n"
        return subprocess.run(
            [command(), "-c", cfg, "hook-runner"], input=line, capture_output=True, text=True, timeout=60
        )

    told = ask({"hook": "tell", "run": run, "state": "open", "fields": {"KVMWD_EVENT": "vm_starts_blocked"}})
    assert told.returncode == 0 and json.loads(told.stdout) == {"result": "ok", "detail": ""}, told.stderr
    [call] = calls(record)
    assert call["state"] == "open" and call["event"] == {"KVMWD_EVENT": "vm_starts_blocked"}
    forged = ask({"hook": "tell", "run": ["/bin/sh", "-c", f"touch {tmp_path}/owned"], "state": "open", "fields": {}})
    assert forged.returncode == 2 and json.loads(forged.stdout)["result"] == "failed"
    assert not (tmp_path / "owned").exists() and len(calls(record)) == 1, "nothing it was sent ran"
