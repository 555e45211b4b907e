"""The operator's first question at 3 a.m.: is a probe hung, which processes, and does libvirt answer?

Every test here drives the real libvirtd (a sandboxed session daemon) with real
`virsh domcapabilities` calls, and runs `kvm-watchdog check` as an operator would.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import pytest
from harness.cli import run_cli, run_cli_process
from harness.fixtures import Processes, WriteConfig
from harness.procs import comm_of
from harness.sandbox import LibvirtSandbox, alive, children_of, file_tree
from harness.wait import wait_for

HUNG_AFTER = "2s"


def test_a_healthy_host_has_no_finding(libvirt: LibvirtSandbox, state_dir: Path, write_config: WriteConfig) -> None:
    cfg = write_config(libvirt.config(state_dir))
    result = run_cli("-c", cfg, "check")
    assert result.rc == 0, result.out + result.err
    assert result.out.startswith("OK: 0 probe dirs, domcapabilities in ")
    assert run_cli("-c", cfg, "check", "--json").json == {"findings": [], "actions": []}


# the monitoring-plugin development guidelines: 'label'=value[UOM];[warn];[crit];[min];[max]
PERFDATA = re.compile(
    r"'([^'=]+)'=(U|-?[0-9]+(?:\.[0-9]+)?)(us|ms|s|%|B|KB|MB|TB|c)?;(-?[0-9.]*);(-?[0-9.]*);(-?[0-9.]*);(-?[0-9.]*)"
)


def parse_perfdata(line: str) -> Dict[str, Dict[str, str]]:
    """The performance data of a plugin's first line, by the format's grammar; an item that does not parse fails."""
    text, bar, perf = line.partition(" | ")
    assert bar and text, f"no perfdata after a | on the first line: {line!r}"
    out: Dict[str, Dict[str, str]] = {}
    for item in perf.split(" "):
        m = PERFDATA.fullmatch(item)
        assert m, f"not 'label'=value[UOM];warn;crit;min;max: {item!r}"
        out[m.group(1)] = {
            "value": m.group(2),
            "uom": m.group(3) or "",
            "warn": m.group(4),
            "crit": m.group(5),
            "min": m.group(6),
            "max": m.group(7),
        }
    return out


def test_check_prints_performance_data_that_monitoring_graphs(
    libvirt: LibvirtSandbox, state_dir: Path, write_config: WriteConfig
) -> None:
    """Icinga, Nagios and check_mk draw graphs from what follows the | of the first line."""
    cfg = write_config(libvirt.config(state_dir))
    result = run_cli_process("-c", cfg, "check")
    assert result.rc == 0, result.out + result.err
    perf = parse_perfdata(result.out.splitlines()[0])
    lat = perf["domcaps_latency"]
    assert lat["uom"] == "ms" and float(lat["value"]) > 0 and (lat["warn"], lat["crit"]) == ("5000", "30000"), (
        "latency in ms, slow and timeout as thresholds"
    )
    assert {perf[f"probes_{s}"]["value"] for s in ("running", "hung", "stale")} == {"0"}
    assert int(perf["cache_entries"]["value"]) >= 1 and perf["findings_critical"]["value"] == "0"
    assert perf["scan_duration"]["uom"] == "s" and float(perf["scan_duration"]["value"]) > 0
    hung = libvirt.hang("hang-init")
    try:
        cfg = write_config(
            libvirt.config(state_dir, detect={"probe_hung_after": HUNG_AFTER}, latency={"enabled": False})
        )
        wait_for(lambda: run_cli("-c", cfg, "check").rc == 2, 30, "the probe to be hung")
        perf = parse_perfdata(run_cli_process("-c", cfg, "check").out.splitlines()[0])
        assert perf["probes_hung"]["value"] == "1" and int(perf["findings_critical"]["value"]) >= 1
        assert perf["domcaps_latency"]["value"] == "U", "not measured is U, never a made-up 0"
    finally:
        libvirt.release()
        hung.wait(30)


@pytest.mark.parametrize("mode", ["hang-init", "hang-qmp"])
def test_a_hung_probe_is_critical_and_names_each_process_by_role(
    libvirt: LibvirtSandbox, state_dir: Path, write_config: WriteConfig, mode: str
) -> None:
    waiting = libvirt.hang(mode)
    probe = libvirt.the_hung_probe()
    cfg = write_config(
        libvirt.config(
            state_dir, detect={"probe_hung_after": HUNG_AFTER}, latency={"timeout": "3s", "slow": "1s", "every": "3s"}
        )
    )
    result = wait_for(
        lambda: (r := run_cli("-c", cfg, "check", "--json")).rc == 2 and "probe_hung" in r.kinds() and r,
        30,
        "probe_hung",
    )

    hung = result.finding("probe_hung")
    assert hung["severity"] == "critical"
    assert hung["subject"] == str(probe["dir"])
    roles = {p["role"]: p for p in hung["evidence"]["processes"]}
    assert roles["daemon"]["pid"] == probe["daemon"]
    assert hung["evidence"]["pidfile"] == {"pid": probe["daemon"], "problem": None}
    assert "domcaps_hung" in result.kinds()
    assert "cache_empty" in result.kinds()  # libvirt dropped the outdated entry before probing
    if mode == "hang-init":
        # the incident's three processes in a row: first (waits on the pipe), zombie, daemon
        assert set(roles) == {"first", "intermediate", "daemon"}
        assert roles["first"]["ppid"] == libvirt.libvirtd_pid
        assert roles["intermediate"]["state"] == "Z" and roles["intermediate"]["ppid"] == roles["first"]["pid"]
        defunct = result.finding("probe_defunct")
        assert defunct["subject"] == str(probe["dir"])
        assert defunct["evidence"]["zombies"][0]["parent_pid"] == roles["first"]["pid"]
        assert defunct["evidence"]["zombies"][0]["parent_kind"] == "probe"
    else:
        # libvirt 9.0 reaped the first process at once here; only the daemon is left
        assert roles["daemon"]["ppid"] != libvirt.libvirtd_pid
        assert "probe_defunct" not in result.kinds()
    human = run_cli("-c", cfg, "check", "--no-latency")
    assert human.rc == 2
    assert f"CRITICAL probe_hung: Capability probe {probe['dir']} has been hung for" in human.out
    assert f"daemon {probe['daemon']} (S)" in human.out

    libvirt.release()
    assert waiting.wait(30) != 0  # the waiting virsh call returns (with an error) once released


def test_a_slow_probe_is_not_a_hung_one(libvirt: LibvirtSandbox, state_dir: Path, write_config: WriteConfig) -> None:
    libvirt.arm("slow:3", count=1)
    waiting = libvirt.domcaps_async()
    wait_for(libvirt.qmp_dirs, 20, "the slow probe's dir")
    cfg = write_config(
        libvirt.config(
            state_dir, detect={"probe_hung_after": "10s"}, latency={"timeout": "15s", "slow": "1s", "every": "15s"}
        )
    )
    result = run_cli("-c", cfg, "check", "--json")
    assert "probe_hung" not in result.kinds()
    slow = result.finding("domcaps_slow")
    assert slow["evidence"]["latency_ms"] >= 1000
    assert result.rc == 1
    assert waiting.wait(30) == 0


def test_a_dir_no_process_belongs_to_is_stale(
    libvirt: LibvirtSandbox, state_dir: Path, write_config: WriteConfig
) -> None:
    stale = libvirt.probe_dir / "qmp-OLD123"
    stale.mkdir(mode=0o700)
    (stale / "qmp.monitor").write_text("")
    cfg = write_config(libvirt.config(state_dir, detect={"stale_dir_after": "1s"}))
    result = wait_for(
        lambda: (r := run_cli("-c", cfg, "check", "--json", "--no-latency")) and "probe_dir_stale" in r.kinds() and r,
        10,
        "probe_dir_stale",
    )
    finding = result.finding("probe_dir_stale")
    assert finding["subject"] == str(stale) and finding["severity"] == "warning"
    assert finding["evidence"]["pidfile"]["problem"] == "missing"
    assert result.rc == 1
    stale.joinpath("qmp.monitor").unlink()
    stale.rmdir()


def _bystanders(libvirt: LibvirtSandbox, tmp_path: Path) -> Tuple[Dict[str, Optional[int]], Processes]:
    """Processes a pidfile might name that must never become part of a probe."""
    sleeper = subprocess.Popen(["sleep", "600"], start_new_session=True)
    fake_bin = tmp_path / "qemu-system-x86_64"  # an emulator's name, but another dir on its command line
    fake_bin.write_text("#!/bin/sh\nsleep 600\n:\n")
    fake_bin.chmod(0o755)
    other_dir = libvirt.probe_dir / "qmp-OTHER1"
    other = subprocess.Popen([str(fake_bin), "-pidfile", f"{other_dir}/qmp.pid"], start_new_session=True)
    wait_for(
        lambda: alive(other.pid) and "qmp-OTHER1" in Path(f"/proc/{other.pid}/cmdline").read_text(),
        10,
        "the other-dir process",
    )
    return {
        "sleep": sleeper.pid,
        "pid1": 1,
        "libvirtd": libvirt.libvirtd_pid,
        "test runner": os.getpid(),
        "other dir": other.pid,
    }, [sleeper, other]


def test_a_pidfile_naming_a_bystander_never_makes_it_part_of_a_probe(
    libvirt: LibvirtSandbox, state_dir: Path, write_config: WriteConfig, tmp_path: Path
) -> None:
    bystanders, procs = _bystanders(libvirt, tmp_path)
    dirs = {}
    try:
        for i, (who, pid) in enumerate(bystanders.items()):
            d = libvirt.probe_dir / f"qmp-BYST{i:02d}"
            d.mkdir(mode=0o700)
            (d / "qmp.pid").write_text(f"{pid}\n")
            dirs[who] = d
        cfg = write_config(libvirt.config(state_dir, detect={"stale_dir_after": "1s", "probe_hung_after": "1s"}))
        result = wait_for(
            lambda: (
                (r := run_cli("-c", cfg, "check", "--json", "--no-latency"))
                and r.kinds().count("probe_dir_stale") == len(dirs)
                and r
            ),
            10,
            "every bystander dir to be reported stale",
        )
        assert "probe_hung" not in result.kinds()
        for f in result.json["findings"]:
            assert f["kind"] == "probe_dir_stale"
            assert "pids" not in f["evidence"]
        rejected = {f["subject"]: f["evidence"].get("pidfile_rejected", "") for f in result.json["findings"]}
        assert "not an emulator's" in rejected[str(dirs["sleep"])]
        assert "libvirt daemon" in rejected[str(dirs["libvirtd"])]
        assert (
            "not an emulator's" in rejected[str(dirs["test runner"])]
            or "watchdog itself" in rejected[str(dirs["test runner"])]
        )
        assert "does not name this probe's dir" in rejected[str(dirs["other dir"])]
        # PID 1 is refused by the pidfile reader itself
        pid1 = [f for f in result.json["findings"] if f["subject"] == str(dirs["pid1"])][0]
        assert pid1["evidence"]["pidfile"]["problem"] == "names PID 1"
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)  # the shell and its sleep
            p.wait()
        for d in dirs.values():
            for child in d.iterdir():
                child.unlink()
            d.rmdir()


MALFORMED = {
    "empty": b"",
    "text": b"hello\n",
    "negative": b"-42\n",
    "huge": b"99999999999999999999\n",
    "one-megabyte": b"1" * (1024 * 1024),
}


def test_malformed_pidfiles_never_crash_or_block_check(
    libvirt: LibvirtSandbox, state_dir: Path, write_config: WriteConfig, tmp_path: Path
) -> None:
    made = []
    for i, content in enumerate(MALFORMED.values()):
        d = libvirt.probe_dir / f"qmp-BADPF{i}"
        d.mkdir(mode=0o700)
        (d / "qmp.pid").write_bytes(content)
        made.append(d)
    target = tmp_path / "secret"
    target.write_text(f"{os.getpid()}\n")
    link = libvirt.probe_dir / "qmp-BADLNK"
    link.mkdir(mode=0o700)
    (link / "qmp.pid").symlink_to(target)
    fifo = libvirt.probe_dir / "qmp-BADFIF"
    fifo.mkdir(mode=0o700)
    os.mkfifo(fifo / "qmp.pid")
    made += [link, fifo]
    try:
        cfg = write_config(libvirt.config(state_dir, detect={"stale_dir_after": "1s"}))
        # a separate process with a deadline: a blocked read on the fifo would show as a timeout here
        result = wait_for(
            lambda: (
                (r := run_cli_process("-c", cfg, "check", "--json", "--no-latency", timeout=20))
                and r.kinds().count("probe_dir_stale") == len(made)
                and r
            ),
            15,
            "every malformed-pidfile dir to be reported",
        )
        assert "Traceback" not in result.err
        problems = {Path(f["subject"]).name: f["evidence"]["pidfile"]["problem"] for f in result.json["findings"]}
        assert problems["qmp-BADPF0"] == "empty"
        assert problems["qmp-BADPF1"].startswith("not a process id")
        assert problems["qmp-BADPF2"].startswith("not a process id")
        assert problems["qmp-BADPF3"].startswith("out of range")
        assert problems["qmp-BADPF4"].startswith("too large")
        assert problems["qmp-BADLNK"] == "is a symbolic link; not followed"
        assert problems["qmp-BADFIF"] == "not a regular file"
    finally:
        for d in made:
            for child in d.iterdir():
                child.unlink()
            d.rmdir()


def test_a_symlink_named_like_a_probe_dir_is_never_entered(
    libvirt: LibvirtSandbox, state_dir: Path, write_config: WriteConfig, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "qmp.pid").write_text(f"{os.getpid()}\n")
    link = libvirt.probe_dir / "qmp-LINK00"
    link.symlink_to(elsewhere)
    try:
        cfg = write_config(libvirt.config(state_dir, detect={"stale_dir_after": "1s"}))
        wait_for(lambda: time.time() - link.lstat().st_mtime > 1.5, 5, "the link to be older than stale_dir_after")
        result = run_cli("-c", cfg, "check", "--json", "--no-latency")
        assert result.json["findings"] == []
    finally:
        link.unlink()


def test_libvirt_stopped_is_unreachable_within_the_timeout(
    own_libvirt: LibvirtSandbox, state_dir: Path, write_config: WriteConfig
) -> None:
    cfg = write_config(own_libvirt.config(state_dir, latency={"timeout": "5s", "every": "5s", "slow": "1s"}))
    own_libvirt.stop()
    started = time.monotonic()
    result = run_cli_process("-c", cfg, "check", "--json", timeout=30)
    elapsed = time.monotonic() - started
    assert result.rc == 2, result.out + result.err
    finding = result.finding("libvirt_unreachable")
    assert "Failed to connect socket" in finding["evidence"]["error"]
    assert elapsed < 5 + 1


def test_check_changes_nothing(libvirt: LibvirtSandbox, state_dir: Path, write_config: WriteConfig) -> None:
    waiting = libvirt.hang("hang-init")
    cfg = write_config(
        libvirt.config(
            state_dir, detect={"probe_hung_after": "1s"}, latency={"timeout": "2s", "every": "2s", "slow": "1s"}
        )
    )
    wait_for(lambda: run_cli("-c", cfg, "check", "--no-latency").rc == 2, 20, "the probe to count as hung")

    def processes() -> Dict[int, bytes]:
        return {
            pid: (Path(f"/proc/{pid}/stat").read_bytes().split()[2])
            for pid in libvirt.sandbox_pids() + [libvirt.libvirtd_pid]
        }

    def files() -> Dict[str, object]:
        return {**file_tree(libvirt.probe_dir), **file_tree(libvirt.cache_dir), **file_tree(state_dir)}

    before_procs, before_files = processes(), files()
    result = run_cli("-c", cfg, "check", "--json")
    assert result.rc == 2
    assert processes() == before_procs
    after_files = files()
    # the latency lock is the one file check may create: it is how two checks never pile calls on libvirt
    after_files.pop(str(state_dir / "latency.lock"), None)
    assert after_files == before_files
    libvirt.release()
    waiting.wait(30)


def test_check_exits_unknown_on_a_broken_config(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("interval: soon\n")
    result = run_cli("-c", str(cfg), "check")
    assert result.rc == 3
    assert f"{cfg}:1: interval: 'soon' is not a duration" in result.err


def test_python_dash_m_is_the_same_command() -> None:
    r = subprocess.run([sys.executable, "-m", "watchdogd", "--version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("kvm-watchdog ")


def test_an_idle_host_costs_a_read_of_libvirts_own_processes_not_a_walk_of_all_proc(
    own_libvirt: LibvirtSandbox, state_dir: Path, write_config: WriteConfig
) -> None:
    from watchdogd.observe.scan import Scanner
    from watchdogd.service.app import build
    from watchdogd.service.preflight import load_config

    scanner = build(load_config(write_config(own_libvirt.config(state_dir)), True)).scanner
    assert isinstance(scanner, Scanner)
    first = scanner.observe()
    assert scanner.full_walks == 1 and own_libvirt.libvirtd_pid in first.libvirt_pids
    again = scanner.observe()
    assert scanner.full_walks == 1, "no probe dir, libvirt unchanged: libvirt's subtree only"
    assert own_libvirt.libvirtd_pid in again.libvirt_pids

    own_libvirt.hang("hang-init", count=1)
    hung = scanner.observe()
    assert scanner.full_walks == 2, "a probe dir exists: every process is looked at"
    [probe] = hung.probes
    assert sorted(m.role.value for m in probe.members) == ["daemon", "first", "intermediate"]
    own_libvirt.release()
    wait_for(lambda: not scanner.observe().probes, 30, "the probe to be gone")
    walks = scanner.full_walks
    old = own_libvirt.kill_libvirtd()
    own_libvirt.start_libvirtd_again()
    after = scanner.observe()
    assert scanner.full_walks == walks + 1, "the known libvirtd is gone: walk everything to find the new one"
    assert own_libvirt.libvirtd_pid in after.libvirt_pids and old not in after.libvirt_pids


def end_contained(unshare: subprocess.Popen[bytes]) -> None:
    """Its libvirtd first, by pid, so that unshare reaps it and exits (this machine's PID 1 reaps no orphan)."""
    for child in children_of(unshare.pid):
        os.kill(child, signal.SIGKILL)
    try:
        unshare.wait(10)
    except subprocess.TimeoutExpired:
        unshare.kill()
        unshare.wait()


CONTAINED = r"""
import ctypes, time
ctypes.CDLL(None).prctl(15, b"libvirtd", 0, 0, 0)  # PR_SET_NAME
time.sleep(3600)
"""
OUTSIDER = r"""
import ctypes, sys, time
ctypes.CDLL(None).prctl(15, b"qemu-system-x86", 0, 0, 0)  # PR_SET_NAME: named like a probe
print("ready", flush=True)
time.sleep(3600)
"""


def test_on_a_systemd_host_a_probe_costs_a_read_of_libvirts_unit_and_no_process_outside_it_joins(
    libvirt: LibvirtSandbox, state_dir: Path, write_config: WriteConfig
) -> None:
    """Where systemd runs, the kernel keeps every probe libvirt starts in libvirt's own unit: a hung probe is found
    there, without a walk of /proc however many processes the host runs, and a process of the same uid outside the
    unit, named like QEMU and naming the probe's dir, is no member of it, on a walk or not. (The shared sandbox: the
    only libvirt daemon here while the test runs; a daemon outside a unit of its own would mean a walk.)"""
    from harness.unit_cgroup import UnitCgroup, systemd_tree

    from watchdogd.observe.scan import Scanner
    from watchdogd.service.app import build
    from watchdogd.service.preflight import load_config

    if systemd_tree() is None:
        pytest.skip("no writable systemd cgroup tree here")
    # a container's libvirtd, as a real-systemd story beside this one runs: root, in a PID namespace of its own,
    # outside every unit here; it is that container's libvirt, not this host's, and costs no walk
    contained = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-c", CONTAINED])
    with contextlib.ExitStack() as stack, UnitCgroup("libvirtd.service") as unit:
        stack.callback(end_contained, contained)
        wait_for(lambda: any(comm_of(pid) == "libvirtd" for pid in children_of(contained.pid)), 10, "its libvirtd")
        assert libvirt.supervisor is not None
        unit.place([libvirt.supervisor.pid, libvirt.libvirtd_pid])  # systemd's ExecStart= and its daemon
        assert libvirt.libvirtd_pid in unit.pids()
        scanner = build(load_config(write_config(libvirt.config(state_dir)), True)).scanner
        assert isinstance(scanner, Scanner)
        scanner.proc.systemd = True  # what /run/systemd/system tells on a host whose PID 1 is systemd
        scanner.observe()
        assert scanner.full_walks == 1

        waiting = libvirt.hang("hang-init", count=1)
        probe_dir = libvirt.the_hung_probe()["dir"]
        user = libvirt.user
        outsider = subprocess.Popen(
            ["/usr/bin/python3", "-c", OUTSIDER, "-pidfile", f"{probe_dir}/qmp.pid"],
            stdout=subprocess.PIPE,
            text=True,
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
        )
        try:
            assert outsider.stdout is not None and outsider.stdout.readline() == "ready\n"
            hung = scanner.observe()
            assert scanner.full_walks == 1, "a probe dir, libvirt in its unit: the unit's cgroup, not a walk"
            walked = scanner.observe(full=True)
            for seen in (hung, walked):
                [probe] = seen.probes
                assert sorted(m.role.value for m in probe.members) == ["daemon", "first", "intermediate"]
                assert outsider.pid not in {m.process.pid for m in probe.members}
        finally:
            outsider.kill()
            outsider.wait()
            libvirt.release()
            waiting.wait(30)
