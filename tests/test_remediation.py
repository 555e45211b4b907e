"""The host heals itself under the operator's rules, and never hurts a bystander.

Against the real sandboxed libvirtd: remediate kills hung probes and libvirt recovers;
repeated hangs escalate once and then the breaker stops everything; bystanders,
symlinks and the cache's bytes come through untouched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest
from harness.cli import REPO, CliResult, run_cli
from harness.findings import hung_probe
from harness.fixtures import WriteConfig
from harness.procs import process_of
from harness.sandbox import LibvirtSandbox, alive, file_tree, probe_shaped_dir
from harness.wait import wait_for

from watchdogd.act.process_ender import ProcessEnder
from watchdogd.config import parse_config
from watchdogd.fsafe import BirthTime
from watchdogd.model import Process
from watchdogd.observe.procfs import ProcFS
from watchdogd.safety import Protected, why_not_member

FAST = {"detect": {"probe_hung_after": "1s"}, "latency": {"enabled": False}, "actions": {"kill_grace": "2s"}}


def remediate(cfg: str, *extra: str) -> CliResult:
    return run_cli("-c", cfg, "remediate", "--json", *extra)


def wait_until_hung(cfg: str) -> None:
    wait_for(lambda: run_cli("-c", cfg, "check", "--no-latency").rc == 2, 20, "the probe to count as hung")


@pytest.mark.parametrize("mode", ["hang-init", "hang-qmp"])
def test_remediate_kills_a_hung_probe_and_libvirt_works_again(
    libvirt: LibvirtSandbox, state_dir: Path, write_config: WriteConfig, mode: str
) -> None:
    waiting = libvirt.hang(mode)
    probe = libvirt.the_hung_probe()
    cfg = write_config(libvirt.config(state_dir, **FAST))
    wait_until_hung(cfg)

    result = remediate(cfg)

    [kill] = result.json["actions"]
    assert kill["action"] == "kill_probe" and kill["result"] == "ok", kill
    assert kill["policy"] == "kill-hung-probes" and kill["finding"] == "probe_hung" and kill["dry_run"] is False
    assert kill["subject"] == str(probe["dir"])
    assert probe["daemon"] in kill["pids"]
    assert f"daemon {probe['daemon']}: SIGTERM, exited in" in kill["detail"]
    assert waiting.wait(30) != 0, "the waiting virsh call returns once the probe is ended"
    assert libvirt.domcaps().returncode == 0, "and the next one succeeds"
    wait_for(lambda: not libvirt.qmp_dirs(), 10, "libvirt to remove the probe dir")
    # what was left right after acting: only the cache, which libvirt refills on the next call
    assert result.rc == 1 and [f["kind"] for f in result.json["findings"]] == ["cache_empty"], result.out
    healthy = write_config(libvirt.config(state_dir, latency={"timeout": "20s", "every": "20s"}))
    assert run_cli("-c", healthy, "check").rc == 0


def test_repeated_hangs_escalate_once_and_a_paused_breaker_holds_the_reset_but_never_a_kill(
    libvirt: LibvirtSandbox, state_dir: Path, write_config: WriteConfig
) -> None:
    """A session libvirt runs its probes as itself: its hangs are evidence from below any qemu user (the rule)."""
    cfg = write_config(
        libvirt.config(
            state_dir,
            **FAST,
            libvirt={"restart_command": libvirt.restart_command()},
            limits={"actions": 1, "per": "1h"},
        )
    )
    libvirt.arm("hang-init", count=3)
    runs = []
    for _ in range(3):
        waiting = libvirt.domcaps_async()
        wait_for(libvirt.hung_probe, 30, "the next hung probe")
        wait_until_hung(cfg)
        runs.append(remediate(cfg))
        waiting.wait(60)

    def summary(r: CliResult) -> List[Tuple[str, str, str]]:
        return [(a["action"], a["policy"], a["result"]) for a in r.json["actions"]]

    assert summary(runs[0]) == [("kill_probe", "kill-hung-probes", "ok")]
    assert summary(runs[1]) == [("kill_probe", "kill-hung-probes", "ok")]
    assert summary(runs[2]) == [
        ("kill_probe", "kill-hung-probes", "ok"),
        ("quarantine_cache", "reset-after-repeated-hangs", "ok"),
        ("restart_libvirt", "reset-after-repeated-hangs", "skipped"),
    ], runs[2].out
    assert "remediation paused" in runs[2].json["actions"][2]["detail"]
    assert any("remediation paused" in e for e in runs[2].json["errors"])
    assert libvirt.current_libvirtd() == libvirt.libvirtd_pid, "libvirtd was not restarted"

    # a fourth hang: the host-wide budget is spent, and the hung probe is ended all the same
    waiting = libvirt.hang("hang-init", count=1)
    wait_until_hung(cfg)
    fourth = remediate(cfg)
    assert summary(fourth) == [("kill_probe", "kill-hung-probes", "ok")], fourth.out
    waiting.wait(60)
    again = remediate(cfg)
    assert again.json["actions"] == [], "the same occurrence is never acted on twice: nothing loops"


def test_dry_run_reports_every_decision_and_changes_nothing(
    libvirt: LibvirtSandbox, state_dir: Path, write_config: WriteConfig
) -> None:
    waiting = libvirt.hang("hang-init")
    probe = libvirt.the_hung_probe()
    cfg = write_config(libvirt.config(state_dir, **FAST))
    wait_until_hung(cfg)
    before = {**file_tree(libvirt.probe_dir), **file_tree(libvirt.cache_dir)}

    result = remediate(cfg, "--dry-run")

    [kill] = result.json["actions"]
    assert kill["result"] == "dry_run" and kill["dry_run"] is True
    assert "would SIGTERM then SIGKILL" in kill["detail"] and f"daemon {probe['daemon']}" in kill["detail"]
    assert alive(probe["daemon"]) and {**file_tree(libvirt.probe_dir), **file_tree(libvirt.cache_dir)} == before
    assert result.rc == 2
    # dry_run in the config does the same
    cfg_dry = write_config(libvirt.config(state_dir, **FAST, dry_run=True))
    assert [a["result"] for a in remediate(cfg_dry).json["actions"]] == ["dry_run"], (
        "the --dry-run before saved nothing, so the policy fires again"
    )
    assert alive(probe["daemon"])
    libvirt.release()
    waiting.wait(30)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_stale_dir_full_of_symlinks_is_left_as_not_libvirts_and_a_probe_shaped_one_is_removed(
    libvirt: LibvirtSandbox, state_dir: Path, write_config: WriteConfig, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    precious_file = elsewhere / "precious.txt"
    precious_file.write_text("do not touch\n")
    precious_dir = elsewhere / "precious-dir"
    precious_dir.mkdir()
    (precious_dir / "inside").write_text("also precious\n")
    stale = libvirt.probe_dir / "qmp-LINKS0"
    stale.mkdir(mode=0o700)
    (stale / "qmp.pid").symlink_to(precious_file)
    (stale / "to-dir").symlink_to(precious_dir)
    (stale / "nested").mkdir()
    (stale / "nested" / "deeper-link").symlink_to(precious_dir / "inside")
    before = file_tree(elsewhere)
    shaped = probe_shaped_dir(libvirt.probe_dir / "qmp-SHAPE0", 4242)  # what a probe libvirt could not clean up leaves
    cfg = write_config(
        libvirt.config(
            state_dir,
            detect={"stale_dir_after": "1s"},
            latency={"enabled": False},
            policies=[{"name": "clean", "on": "probe_dir_stale", "do": ["remove_stale_dir"]}],
        )
    )
    result = wait_for(
        lambda: (r := remediate(cfg)) and len(r.json["actions"]) == 2 and r, 10, "both stale dirs to be acted on"
    )
    done = {a["subject"]: a for a in result.json["actions"]}
    assert done[str(shaped)]["result"] == "ok" and not shaped.exists(), done
    assert done[str(stale)]["result"] == "skipped" and "not a dir libvirt made" in done[str(stale)]["detail"], done
    assert stale.is_dir() and (stale / "qmp.pid").is_symlink(), "left whole: reported, never removed"
    assert file_tree(elsewhere) == before
    shutil.rmtree(stale)


def test_a_stale_dir_swapped_for_a_symlink_is_refused(
    libvirt: LibvirtSandbox, state_dir: Path, write_config: WriteConfig, tmp_path: Path
) -> None:
    from watchdogd.act.probe_dir_removal import RefusedError, remove_probe_dir

    target = tmp_path / "target"
    target.mkdir()
    (target / "keep").write_text("x")
    link = libvirt.probe_dir / "qmp-SWAP00"
    link.symlink_to(target)
    try:
        with pytest.raises(RefusedError, match="not a directory"):
            remove_probe_dir(str(link), [str(libvirt.probe_dir)], BirthTime())
        with pytest.raises(RefusedError, match="not directly under a configured probe dir"):
            remove_probe_dir(str(target), [str(libvirt.probe_dir)], BirthTime())
        assert (target / "keep").read_text() == "x"
    finally:
        link.unlink()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A state dir on another file system, so quarantine must copy, not rename."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("across_filesystems", [False, True])
def test_quarantine_keeps_every_byte_of_the_cache(tmp_path: Path, tmpfs: Path, across_filesystems: bool) -> None:
    from watchdogd.act.quarantine import quarantine_cache

    cache = tmp_path / "cache"
    cache.mkdir()
    for i in range(4):
        (cache / f"{i:064x}.xml").write_bytes(os.urandom(50_000 + i))
    hashes = {p.name: sha(p) for p in cache.iterdir()}
    root = (tmpfs if across_filesystems else tmp_path) / "state" / "quarantine"

    result = quarantine_cache(str(cache), str(root), keep=3, now=1_700_000_000)

    assert not result.failed and sorted(result.moved) == sorted(hashes)
    assert list(cache.iterdir()) == []
    dest = Path(result.dest)
    assert {p.name: sha(p) for p in dest.iterdir() if p.suffix == ".xml"} == hashes
    assert "MANIFEST.json" in os.listdir(dest)


def test_quarantine_keeps_only_the_newest_sets(tmp_path: Path) -> None:
    from watchdogd.act.quarantine import quarantine_cache

    cache = tmp_path / "cache"
    cache.mkdir()
    root = tmp_path / "quarantine"
    for t in range(5):
        (cache / "entry.xml").write_text(str(t))
        quarantine_cache(str(cache), str(root), keep=2, now=1_700_000_000 + t)
    kept = sorted(root.iterdir())
    assert len(kept) == 2
    assert [(d / "entry.xml").read_text() for d in kept] == ["3", "4"]


# ---- bystanders: nothing but a probe's own processes is ever signalled ------------------


def _fake_emulator(tmp_path: Path) -> Path:
    fake = tmp_path / "qemu-system-x86_64"
    fake.write_text("#!/bin/sh\nsleep 600\n:\n")
    fake.chmod(0o755)
    return fake


def test_the_safety_rule_refuses_every_bystander(libvirt: LibvirtSandbox, tmp_path: Path) -> None:
    proc = ProcFS()
    probe_dir = libvirt.probe_dir / "qmp-GUARD0"
    probe_dir.mkdir(mode=0o700)
    fake = _fake_emulator(tmp_path)
    # a process that names the dir but started before the dir was made
    early_dir = libvirt.probe_dir / "qmp-EARLY0"
    early = subprocess.Popen([str(fake), "-pidfile", f"{early_dir}/qmp.pid"], start_new_session=True)
    other = subprocess.Popen([str(fake), "-pidfile", f"{libvirt.probe_dir}/qmp-OTHER2/qmp.pid"], start_new_session=True)
    sleeper = subprocess.Popen(["sleep", "600"], start_new_session=True)
    wait_for(
        lambda: proc.uptime() - process_of(proc, early.pid).start_boot_s > 1.5,
        10,
        "the early process to be older than the slack",
    )
    early_dir.mkdir(mode=0o700)
    made = os.stat(early_dir).st_mtime
    try:
        boot_wall = proc.boot_wall()
        protected = Protected(os.getpid(), frozenset({libvirt.libvirtd_pid}))
        ender = ProcessEnder(proc, grace=1)
        cases = {
            "sleep": (sleeper.pid, probe_dir, "not an emulator's"),
            "libvirtd": (libvirt.libvirtd_pid, probe_dir, "libvirt daemon"),
            "test runner": (os.getpid(), probe_dir, "watchdog itself"),
            "other dir": (other.pid, probe_dir, "does not name this probe's dir"),
            "started before its dir": (early.pid, early_dir, "before the dir was made"),
        }
        for who, (pid, d, reason) in cases.items():
            seen = process_of(proc, pid)

            def why_not(p: Process, d: Path = d) -> Optional[str]:
                dir_made = made if d == early_dir else os.stat(d).st_mtime
                return why_not_member(p, str(d), dir_made, boot_wall, protected, ["qemu"], os.stat(d).st_uid)

            outcome = ender.end(seen, why_not)
            assert not outcome.ended and reason in outcome.how, (who, outcome)
            assert alive(pid), f"{who} was signalled"
    finally:
        for p in (early, other, sleeper):
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        early_dir.rmdir()
        probe_dir.rmdir()


def test_a_recycled_pid_is_never_signalled(tmp_path: Path) -> None:
    proc = ProcFS()
    victim = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        now = process_of(proc, victim.pid)
        # what the scan saw was an earlier process with the same PID: another start time
        seen = Process(
            pid=now.pid,
            ppid=now.ppid,
            state="S",
            comm="qemu-system-x86",
            start_boot_s=now.start_boot_s - 5,
            cmdline=now.cmdline,
        )
        for use_pidfd in (True, False):
            outcome = ProcessEnder(proc, grace=1, use_pidfd=use_pidfd).end(seen, lambda _p: None)
            assert "its PID now names another process" in outcome.how
            assert alive(victim.pid)
    finally:
        victim.kill()
        victim.wait()


PID1_SCRIPT = """
import os, sys
sys.path.insert(0, {repo!r})
from watchdogd.act.process_ender import ProcessEnder
from watchdogd.observe.procfs import ProcFS
from watchdogd.safety import Protected, why_not_member
assert os.getpid() == 1, os.getpid()
proc = ProcFS()
me = proc.process(1)
d = {probe_dir!r}
assert me.comm.startswith("qemu") and any(d in a for a in me.cmdline), (me.comm, me.cmdline)
protected = Protected(own_pid=-1, libvirt_pids=frozenset())
outcome = ProcessEnder(proc, grace=1).end(me, lambda p: why_not_member(p, d, os.stat(d).st_mtime - 5, proc.boot_wall(), protected, ["qemu"], os.stat(d).st_uid))
print(outcome.how)
sys.exit(0 if not outcome.ended else 1)
"""


def test_pid_1_is_never_signalled_even_when_it_looks_like_a_probe(tmp_path: Path) -> None:
    """PID 1 of its own PID namespace, named like an emulator, naming the probe dir."""
    probe_dir = tmp_path / "lib" / "qmp-PIDONE"
    probe_dir.mkdir(parents=True)
    emulator = tmp_path / "qemu-system-x86_64"
    emulator.symlink_to(sys.executable)  # comm comes from the name it is run by
    script = tmp_path / "pid1.py"
    script.write_text(PID1_SCRIPT.format(repo=str(REPO), probe_dir=str(probe_dir)))
    r = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", str(emulator), str(script), "-pidfile", f"{probe_dir}/qmp.pid"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "not signalled: it is PID 1" in r.stdout


def test_remediate_with_a_broken_config_acts_on_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("policies:\n  - name: x\n    on: probe_hung\n    do: [kil_probe]\n")
    result = run_cli("-c", str(cfg), "remediate")
    assert result.rc == 3 and "unknown action 'kil_probe'" in result.err


def test_policy_state_survives_a_restart_and_a_corrupt_file_is_set_aside(state_dir: Path) -> None:
    from watchdogd.decide.policy import PolicyEngine, PolicyState
    from watchdogd.state import StateStore

    config = parse_config(f"state_dir: {state_dir}\n", "c.yaml")
    store = StateStore(str(state_dir))
    engine = PolicyEngine(config)
    hung = [hung_probe(f"/d/qmp-AAAAA{i}") for i in range(3)]
    engine.decide(hung[:2], now=100.0)
    store.write_json("policy.json", engine.state.to_json())
    restarted = PolicyEngine(config, PolicyState.from_json(store.read_json("policy.json")))
    planned = restarted.decide(hung, now=200.0)
    assert [(p.action, p.finding.subject) for p in planned] == [
        ("kill_probe", "/d/qmp-AAAAA2"),  # the first two were already acted on before the restart
        ("quarantine_cache", "/d/qmp-AAAAA0"),
        ("restart_libvirt", "/d/qmp-AAAAA0"),
    ]
    (state_dir / "policy.json").write_text("{not json")
    assert store.read_json("policy.json") is None
    assert any("corrupt" in p.text and "moved aside" in p.text for p in store.problems.drain())
    assert any(n.startswith("policy.json.corrupt-") for n in os.listdir(state_dir))
