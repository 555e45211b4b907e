"""Hostile conditions: a host that is already failing, and a qemu user who owns the probe dirs and means harm.

Each line of docs/THREAT-MODEL.md has a test here. The figures (`make hostile`):
scenarios survived, inputs fuzzed, wrong signals sent (bystanders that died: must
be 0), bytes lost (cache or state bytes that went missing: must be 0).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import yaml
from harness.cli import run_cli
from harness.fixtures import HostileFigures, Processes, StartDaemon, WriteConfig
from harness.journald import Journald
from harness.sandbox import LibvirtSandbox, probe_shaped_dir
from harness.service import RunningDaemon
from harness.wait import wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

from watchdogd.act.actions import QuarantineCache
from watchdogd.act.probe_dir_removal import NotLibvirtsError, RefusedError, remove_probe_dir
from watchdogd.act.result import Result
from watchdogd.config import Config, LibvirtConfig
from watchdogd.fsafe import BirthTime
from watchdogd.kinds import Kind, Severity
from watchdogd.model import Finding
from watchdogd.observe.procfs import ProcFS, parse_stat, split_cmdline
from watchdogd.observe.scan import Scanner
from watchdogd.pidfile import parse_pid, read_pidfile
from watchdogd.service.app import build
from watchdogd.service.preflight import load_config
from watchdogd.state import StateStore

pytestmark = pytest.mark.hostile


def tree_digest(root: Path) -> Dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "1000"])


KILL_AND_CLEAN = [
    {"name": "kill", "on": "probe_hung", "do": ["kill_probe"]},
    {"name": "clean", "on": "probe_dir_stale", "do": ["remove_stale_dir"]},
]
FUZZED = [0]  # inputs tried by the hypothesis tests below, for the figures


@pytest.fixture(autouse=True)
def _count_fuzzed(figures: HostileFigures) -> Iterator[None]:
    before = FUZZED[0]
    yield
    figures.inputs_fuzzed += FUZZED[0] - before


# ---- a qemu user plants things in the probe dir ---------------------------------------------


def test_planted_pidfiles_links_and_odd_names_make_root_signal_and_delete_nothing_else(
    journald: Journald,
    libvirt: LibvirtSandbox,
    state_dir: Path,
    tmp_path: Path,
    write_config: WriteConfig,
    start_daemon: StartDaemon,
    bystanders: Processes,
    figures: HostileFigures,
) -> None:
    probe_root = libvirt.probe_dir
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "precious").write_bytes(os.urandom(4096))
    (victim / "sub" / "data").write_bytes(os.urandom(1024))
    before = tree_digest(victim)

    bystander = sleeper()
    # names a dir, but is no emulator
    # (one process: a shell's `sleep` child would outlive the cleanup, which ends what it started by pid)
    named_like_probe = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(1000)", str(probe_root / "qmp-Byst4r")]
    )
    bystanders += [bystander, named_like_probe]

    def plant(name: str) -> Path:
        d = probe_root / name
        d.mkdir()
        return d

    plant("qmp-Pid0ne").joinpath("qmp.pid").write_text(f"{bystander.pid}\n")  # a bystander's pid
    plant("qmp-Pid1ii").joinpath("qmp.pid").write_text("1\n")  # init
    plant("qmp-Self00").joinpath("qmp.pid").write_text(f"{os.getpid()}\n")  # the test runner (stands in for root tools)
    links = plant("qmp-L1nks0")
    (links / "qmp.pid").symlink_to(victim / "precious")
    (links / "to-victim").symlink_to(victim)
    os.link(victim / "precious", links / "hardlink")  # root made it; a qemu user cannot (protected_hardlinks)
    (links / b"odd-\xff-\n-name".decode("utf-8", "surrogateescape")).write_text("x")
    plant("qmp-Byst4r")
    (probe_root / "qmp-Sym1ink").symlink_to(victim)  # a "probe dir" that is a symlink to somewhere else
    (probe_root / "qmp-\nnewline").mkdir()  # not a probe dir name: never touched
    # root's own dirs renamed into probe names (a same-dir rename needs no write on the dir it moves)
    plant("qmp-NvRam0").joinpath("vm1_VARS.fd").write_bytes(os.urandom(128 * 1024))  # the VMs' nvram/
    plant("qmp-Snap00").joinpath("vm1").mkdir()  # libvirt's snapshot/, a root 0700 dir per domain
    (probe_root / "qmp-Snap00" / "vm1" / "snap1.xml").write_text("<domainsnapshot/>")
    not_libvirts = ["qmp-L1nks0", "qmp-NvRam0", "qmp-Snap00"]
    kept = {n: tree_digest(probe_root / n) for n in not_libvirts}
    planted = ["qmp-Pid0ne", "qmp-Pid1ii", "qmp-Self00", "qmp-Byst4r"]

    cfg = write_config(
        libvirt.config(
            state_dir,
            interval="0.5s",
            events="journal",
            detect={"probe_hung_after": "1s", "stale_dir_after": "1s"},
            policies=KILL_AND_CLEAN,
        )
    )
    daemon = start_daemon(cfg)
    wait_for(lambda: not any((probe_root / n).exists() for n in planted), 60, "the planted dirs to be removed as stale")
    removed = daemon.wait_journal("action", count=len(planted), KVMWD_ACTION="remove_stale_dir", KVMWD_RESULT="ok")
    assert sorted(os.path.basename(e["KVMWD_SUBJECT"]) for e in removed) == sorted(planted)
    assert daemon.journal_events("action", KVMWD_ACTION="kill_probe") == [], (
        "no planted pidfile made anything a probe member"
    )
    skipped = daemon.wait_journal(
        "action", count=len(not_libvirts), KVMWD_ACTION="remove_stale_dir", KVMWD_RESULT="skipped"
    )
    assert sorted(os.path.basename(e["KVMWD_SUBJECT"]) for e in skipped) == sorted(not_libvirts)
    assert all("not a dir libvirt made" in e["KVMWD_DETAIL"] for e in skipped), [e["KVMWD_DETAIL"] for e in skipped]
    assert {n: tree_digest(probe_root / n) for n in not_libvirts} == kept, "what libvirt did not make is left whole"
    assert (probe_root / "qmp-Sym1ink").is_symlink(), "a symlink in place of a probe dir is not a probe dir"
    assert (probe_root / "qmp-\nnewline").is_dir()
    assert tree_digest(victim) == before, "nothing behind a link was touched"
    figures.bytes_lost += sum(len(k) for k in set(before) - set(tree_digest(victim)))
    assert daemon.alive()
    os.unlink(probe_root / "qmp-Sym1ink")
    os.rmdir(probe_root / "qmp-\nnewline")
    for name in not_libvirts:
        shutil.rmtree(probe_root / name)


def test_a_dir_renamed_away_and_replaced_after_it_was_judged_stale_is_not_removed(tmp_path: Path) -> None:
    base = tmp_path / "lib"
    base.mkdir()
    stale = base / "qmp-Stale1"
    stale.mkdir()
    fd = os.open(stale, os.O_RDONLY | os.O_DIRECTORY)
    made = BirthTime().of_fd(fd)
    os.close(fd)
    os.rename(stale, base / "qmp-Moved1")
    wait_for(lambda: time.time() - made > 0.01, 5, "a new birth time")
    stale.mkdir()  # a new, live probe's dir under the old name
    (stale / "qmp.monitor").write_text("in use")
    with pytest.raises(RefusedError, match="replaced"):
        remove_probe_dir(str(stale), [str(base)], BirthTime(), made)
    assert (stale / "qmp.monitor").exists()


def test_a_stale_dir_of_200k_entries_is_refused_at_the_first_and_never_listed_whole(tmp_path: Path) -> None:
    """The qemu user fills a stale dir: the removal reads past no more than a probe's own few entries."""
    flooded = tmp_path / "lib" / "qmp-Flood1"
    flooded.mkdir(parents=True)
    for i in range(200_000):
        os.close(os.open(flooded / f"f{i}", os.O_CREAT | os.O_WRONLY, 0o600))
    tracemalloc.start()
    try:
        with pytest.raises(NotLibvirtsError, match="nothing a probe makes"):
            remove_probe_dir(str(flooded), [str(flooded.parent)], BirthTime())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes traced: the listing stops at the first entry no probe makes"
    assert len(os.listdir(flooded)) == 200_000


def test_a_dir_shaped_as_libvirt_leaves_a_probes_is_removed_and_one_entry_more_is_not(tmp_path: Path) -> None:
    base = tmp_path / "lib"
    shaped, more = base / "qmp-Shape1", base / "qmp-More01"
    base.mkdir()
    for d in (shaped, more):
        probe_shaped_dir(d, 4242)
    (more / "qmp.log").write_text("x")
    assert remove_probe_dir(str(shaped), [str(base)], BirthTime()) == 3  # its two entries and the dir
    assert not shaped.exists()
    with pytest.raises(NotLibvirtsError, match="'qmp.log' is nothing a probe makes"):
        remove_probe_dir(str(more), [str(base)], BirthTime())
    assert sorted(os.listdir(more)) == ["qmp.log", "qmp.monitor", "qmp.pid"]


def test_a_fresh_probe_dir_is_not_stale_when_the_wall_clock_jumps_an_hour_ahead(tmp_path: Path) -> None:
    base = tmp_path / "lib"
    (base / "qmp-Fresh1").mkdir(parents=True)
    offset = [0.0]
    config = Config(
        state_dir=str(tmp_path / "state"), libvirt=LibvirtConfig(probe_dirs=(str(base),), cache_dir=str(tmp_path))
    )
    # the wall clock, passed in
    scanner = Scanner(
        config, ProcFS(), BirthTime(), StateStore(config.state_dir), clock=lambda: time.time() + offset[0]
    )
    [seen] = scanner.observe().probes
    assert seen.age_s < 5
    offset[0] = 3600.0  # someone sets the clock (or NTP steps it) forward an hour
    [after] = scanner.observe().probes
    assert after.age_s < 5, "ages grow with the monotonic clock once a dir was seen"


# ---- the host fails under the watchdog -------------------------------------------------------


def test_libvirtd_killed_mid_probe_leaves_a_probe_that_is_ended_and_a_dir_that_is_cleaned(
    journald: Journald,
    own_libvirt: LibvirtSandbox,
    state_dir: Path,
    write_config: WriteConfig,
    start_daemon: StartDaemon,
) -> None:
    cfg = write_config(
        own_libvirt.config(
            state_dir,
            interval="0.5s",
            events="journal",
            # a crash, not a restart: no grace to wait out (a restarting libvirt gets 30 s by default)
            detect={"probe_hung_after": "2s", "stale_dir_after": "2s", "grace": {"libvirt_unreachable": "0s"}},
            latency={"every": "2s", "timeout": "1s", "slow": "0.5s"},
            policies=KILL_AND_CLEAN,
        )
    )
    own_libvirt.hang("hang-init", count=1)
    probe_dir = str(own_libvirt.the_hung_probe()["dir"])
    own_libvirt.kill_libvirtd()  # mid-probe: nobody will remove its dir now
    daemon = start_daemon(cfg)
    daemon.wait_journal("libvirt_unreachable", KVMWD_STATE="open")
    daemon.wait_journal("action", KVMWD_ACTION="kill_probe", KVMWD_RESULT="ok")
    daemon.wait_journal("action", KVMWD_ACTION="remove_stale_dir", KVMWD_RESULT="ok", KVMWD_SUBJECT=probe_dir)
    assert not os.path.exists(probe_dir)
    own_libvirt.start_libvirtd_again()
    daemon.wait_journal("libvirt_unreachable", KVMWD_STATE="resolved")
    assert own_libvirt.domcaps().returncode == 0
    assert daemon.alive()


def test_libvirtd_restarted_during_a_latency_probe(
    journald: Journald,
    own_libvirt: LibvirtSandbox,
    state_dir: Path,
    write_config: WriteConfig,
    start_daemon: StartDaemon,
) -> None:
    # no grace: the call's failure itself is what is under test (at the default grace a
    # restart is a normal moment and no finding: the Debian 12/13 system test shows that)
    no_grace = {"libvirt_unreachable": "0s", "domcaps_failed": "0s", "cache_empty": "0s"}
    cfg = write_config(
        own_libvirt.config(
            state_dir,
            interval="1s",
            events="journal",
            detect={"grace": no_grace},
            latency={"every": "3s", "timeout": "2s", "slow": "1s"},
            policies=[],
        )
    )
    own_libvirt.arm("slow:6", 1)  # the next probe takes 6 s: the latency call is in flight meanwhile
    daemon = start_daemon(cfg)
    wait_for(daemon.children, 30, "the latency probe in flight")
    old = own_libvirt.libvirtd_pid
    assert own_libvirt.supervisor is not None
    own_libvirt.supervisor.send_signal(signal.SIGUSR1)  # restart, as systemctl restart would
    own_libvirt.wait_libvirtd(not_pid=old)
    seen = wait_for(
        lambda: [
            e
            for e in daemon.journal()
            if e["KVMWD_EVENT"] in ("domcaps_hung", "domcaps_failed", "libvirt_unreachable", "domcaps_slow")
        ],
        60,
        "the disturbance reported",
    )
    kind = seen[0]["KVMWD_EVENT"]
    own_libvirt.kill_leftovers()
    daemon.wait_journal(kind, KVMWD_STATE="resolved", timeout=60)
    assert daemon.alive()
    assert "Traceback" not in daemon.stderr_path.read_text()


def status_problems(daemon: RunningDaemon) -> List[Dict[str, Any]]:
    return [e for e in daemon.journal_events("scan_problem") if "status.json" in e["KVMWD_PROBLEM"]]


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "kvmwd-tiny", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_state_dir_is_reported_once_and_the_daemon_goes_on(
    journald: Journald, libvirt: LibvirtSandbox, tiny_tmpfs: Path, write_config: WriteConfig, start_daemon: StartDaemon
) -> None:
    cfg = write_config(libvirt.config(tiny_tmpfs, interval="0.5s", events="journal"))
    filler = tiny_tmpfs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass  # full
    finally:
        os.close(fd)
    daemon = start_daemon(cfg)
    wait_for(lambda: status_problems(daemon), 30, "the status.json problem in the journal")
    assert run_cli("-c", cfg, "status").rc == 3, "nothing half-written: no status at all"
    filler.unlink()
    wait_for((tiny_tmpfs / "status.json").exists, 30, "the status once there is room")
    assert run_cli("-c", cfg, "status").rc == 0
    # each file that could not be written (status.json every scan; policy.json and
    # kernel.json when a scan had something to save) is its own problem, each once
    texts = [e["KVMWD_PROBLEM"] for e in daemon.journal_events("scan_problem")]
    assert all("No space left on device" in t for t in texts), texts
    assert len(status_problems(daemon)) == 1 and len(texts) == len(set(texts)), "reported once, not once per scan"
    assert not [p for p in tiny_tmpfs.iterdir() if p.name.startswith(".status.json.")], "no temp file left behind"


def test_a_read_only_state_dir_is_reported_and_the_daemon_goes_on(
    journald: Journald, libvirt: LibvirtSandbox, tiny_tmpfs: Path, write_config: WriteConfig, start_daemon: StartDaemon
) -> None:
    cfg = write_config(libvirt.config(tiny_tmpfs, interval="0.5s", events="journal"))
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], check=True)
    daemon = start_daemon(cfg)
    [problem] = wait_for(lambda: status_problems(daemon), 30, "the status.json problem in the journal")
    assert "Read-only file system" in problem["KVMWD_PROBLEM"]
    wait_for(lambda: daemon.journal_events("started"), 10, "events still flow")
    assert daemon.alive()


def test_quarantine_into_a_full_state_dir_loses_no_byte_of_the_cache(
    tiny_tmpfs: Path, tmp_path: Path, figures: HostileFigures
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    for i in range(4):
        (cache / f"qemu-{i}.xml").write_bytes(os.urandom(48 * 1024))
    before = tree_digest(cache)
    config = Config(state_dir=str(tiny_tmpfs), libvirt=LibvirtConfig(cache_dir=str(cache)))
    done = QuarantineCache(config).run(Finding(Kind.PROBE_HUNG, Severity.CRITICAL, "x", 0, "x"))
    after = tree_digest(cache)
    quarantined = {}
    for d in (tiny_tmpfs / "quarantine").glob("*/"):
        quarantined.update(tree_digest(d))
    lost = {k: v for k, v in before.items() if after.get(k) != v and v not in quarantined.values()}
    figures.bytes_lost += sum((cache / k).stat().st_size if (cache / k).exists() else 48 * 1024 for k in lost)
    assert lost == {}
    assert done.result is Result.FAILED and "left in place" in done.detail


def test_the_config_deleted_while_running_keeps_the_old_one(
    journald: Journald, libvirt: LibvirtSandbox, state_dir: Path, tmp_path: Path, start_daemon: StartDaemon
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(libvirt.config(state_dir, interval="30s", events="journal")))
    daemon = start_daemon(str(path))
    daemon.wait_journal("started")
    path.unlink()
    daemon.signal(signal.SIGHUP)
    [error] = daemon.wait_journal("config_error")
    assert "no such file" in error["KVMWD_PROBLEMS"]
    os.mkfifo(path)  # worse: a FIFO in its place must not hang the loop
    daemon.signal(signal.SIGHUP)
    daemon.wait_journal("config_error", count=2)
    assert daemon.alive()
    assert daemon.stop() == 0


def test_processes_exiting_between_listdir_and_read_never_break_a_scan(tmp_path: Path) -> None:
    fake = tmp_path / "qemu-system-x86_64"
    shutil.copy("/bin/true", fake)
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            procs = [subprocess.Popen([str(fake), f"-pidfile={tmp_path}/qmp-Churn1/qmp.pid"]) for _ in range(20)]
            for p in procs:
                p.wait()

    (tmp_path / "qmp-Churn1").mkdir()
    config = Config(
        state_dir=str(tmp_path / "state"), libvirt=LibvirtConfig(probe_dirs=(str(tmp_path),), cache_dir=str(tmp_path))
    )
    scanner = build(config).scanner
    worker = threading.Thread(target=churn)
    worker.start()
    try:
        for _ in range(300):
            obs = scanner.observe(full=True)
            assert not obs.errors, obs.errors
    finally:
        stop.set()
        worker.join(30)


def test_thousands_of_probe_dirs_are_one_flood_finding_and_their_cleanup_spends_only_the_unproven_budget(
    journald: Journald,
    libvirt: LibvirtSandbox,
    state_dir: Path,
    write_config: WriteConfig,
    start_daemon: StartDaemon,
    bystanders: Processes,
) -> None:
    victim = sleeper()
    bystanders.append(victim)
    for i in range(3000):
        d = libvirt.probe_dir / f"qmp-{i:06d}"
        d.mkdir()
        (d / "qmp.pid").write_text(f"{victim.pid}\n")
    cfg = write_config(
        libvirt.config(
            state_dir,
            interval="1s",
            events="journal",
            detect={"stale_dir_after": "1s", "max_dirs_per_base": 500},
            policies=[{"name": "clean", "on": "probe_dir_stale", "do": ["remove_stale_dir"]}],
            limits={"actions": 20, "unproven_actions": 20, "per": "1h"},
        )
    )
    daemon = start_daemon(cfg)
    try:
        [flood] = daemon.wait_journal("probe_dirs_flood", timeout=60)
        assert "3000 qmp-XXXXXX dirs" in flood["MESSAGE"] and "500 are tracked" in flood["MESSAGE"]
        [held] = daemon.wait_journal("action", KVMWD_RESULT="skipped", timeout=120)
        assert (
            "unproven budget spent" in held["KVMWD_DETAIL"]
            and "remediation of proven probes goes on" in held["KVMWD_DETAIL"]
        )
        oks = daemon.journal_events("action", KVMWD_RESULT="ok")
        assert len(oks) == 20, "the unproven budget stops a cleanup storm at limits.unproven_actions"
        assert daemon.journal_events("remediation_paused") == [], "forgeable dirs never pause remediation"
        # every tracked dir's finding, waited for: on a busy machine they may reach the journal after the skip
        stale = daemon.wait_journal("probe_dir_stale", count=500, timeout=60, KVMWD_STATE="open")
        assert 500 <= len(stale) <= 500 + 20, (
            "at most max_dirs_per_base dirs are tracked (and those that replace the removed ones)"
        )
        assert len([d for d in libvirt.probe_dir.iterdir() if d.name.startswith("qmp-")]) == 2980
        assert daemon.alive()
    finally:
        daemon.stop()
        for d in libvirt.probe_dir.glob("qmp-0*"):
            shutil.rmtree(d)


# ---- fuzzing: never a traceback, always a clear error ---------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_any_pidfile_bytes_give_a_pid_or_a_reason(data: bytes) -> None:
    FUZZED[0] += 1
    read = parse_pid(data, 4194304)
    assert (read.pid is None) != (read.problem is None)
    if read.pid is not None:
        assert 1 <= read.pid <= 4194304


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_any_proc_stat_line_parses_or_is_refused_clearly(data: bytes) -> None:
    FUZZED[0] += 1
    try:
        comm, state, ppid, start, _flags = parse_stat(data)
    except ValueError as exc:
        assert "not a /proc/PID/stat line" in str(exc)
    else:
        assert isinstance(comm, str) and isinstance(state, str) and isinstance(ppid, int) and isinstance(start, int)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_any_cmdline_bytes_split_into_strings_that_round_trip(data: bytes) -> None:
    FUZZED[0] += 1
    argv = split_cmdline(data)
    assert all(isinstance(a, str) for a in argv)
    if data:
        body = data[:-1] if data.endswith(b"\0") else data
        assert b"\0".join(os.fsencode(a) for a in argv) == body


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_pidfile_on_disk_is_read_without_a_traceback(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    FUZZED[0] += 1
    d = tmp_path_factory.mktemp("pidfile")
    (d / "qmp.pid").write_bytes(data)
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        read = read_pidfile(fd, 4194304)
    finally:
        os.close(fd)
    assert (read.pid is None) != (read.problem is None)


def test_a_config_of_random_bytes_on_disk_is_a_clear_error(tmp_path: Path) -> None:
    for i in range(50):
        FUZZED[0] += 1
        path = tmp_path / f"c{i}.yaml"
        path.write_bytes(os.urandom(200 + i * 13))
        try:
            load_config(str(path), True)
        except Exception as exc:  # noqa: BLE001 - the point: only ConfigError may come out
            assert type(exc).__name__ == "ConfigError", repr(exc)


def test_a_process_table_read_under_a_hostile_proc_tree_skips_what_it_cannot_read(tmp_path: Path) -> None:
    root = tmp_path / "proc"
    (root / "10").mkdir(parents=True)
    (root / "10" / "stat").write_bytes(b"10 (qemu-system-x8) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0")
    (root / "10" / "cmdline").write_bytes(b"qemu\0-pidfile\0" + bytes(range(1, 256)))
    (root / "11").mkdir()
    (root / "11" / "stat").write_bytes(b"11 (qemu) Z")  # truncated
    (root / "12").mkdir()  # no stat at all (exited)
    (root / "uptime").write_text("1000.0 0\n")
    table = ProcFS(str(root)).scan(lambda comm: "qemu" in comm)
    assert list(table) == [10], "the truncated and the vanished entries are skipped"
    assert table[10].cmdline[:2] == ("qemu", "-pidfile") and os.fsencode(table[10].cmdline[2]) == bytes(range(1, 256))
