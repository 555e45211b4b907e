"""The incident's own host family, for real: Kylin V10 / openEuler 20.03 LTS, as harness/hosts.py describes it.

An x86_64 VM (emulated: this machine kind's KVM runs only PVM guest kernels) whose systemd runs cgroup v1 (the legacy hierarchy), with /usr/bin/python3.7
(PyYAML 5.3.1, python-systemd 234, setuptools 44), qemu.conf's user and group root, the emulator at
/usr/libexec/qemu-kvm, and the unit's pidfd syscalls answering ENOSYS. Inside, harness/kylin_job.py
builds the RPM from the release tree with that python3.7, installs it, enables the service and records
what happens; this test judges the record:
- the RPM puts watchdogd/ under python3.7/site-packages and a command that runs that Python;
- the daemon runs under 3.7, in the name=systemd cgroup of its unit;
- the real QEMU probe, run as root and held at its chdir("/"), is proven libvirt's by its name=systemd
  cgroup, said why, and ended at its deadline on the pidfd-less path;
- a VM start that aborts with the incident's PMU lines is told;
- a guest of libvirt's is counted from machine.slice, and it and a root process named qemu-kvm that is no
  probe's are left alone; a recycled PID is refused;
- restart, reload and stop.
`make matrix` runs it (about 6 minutes with its image cached; building the image, once, about 8).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any, Dict

import pytest
from harness.hosts import HOSTS
from harness.vm import Machine, ensure_image

from watchdogd import __version__

HOST = HOSTS["kylin-v10-like"]
HARNESS = Path(__file__).resolve().parent / "harness"
REPO = HARNESS.parent.parent
JOB_FILES = ("vm_job.py", "wait.py", "fake_qemu.py", "chdir_hang.c", "recycled_pid.py")
DEADLINE_S = 60  # the shipped detect.probe_hung_after

pytestmark = [
    pytest.mark.xdist_group(
        "kylin"
    ),  # one boot for the module's tests: one worker (make matrix runs hosts side by side)
    pytest.mark.matrix,
    pytest.mark.skipif(
        not (shutil.which("qemu-system-x86_64") and shutil.which("debootstrap")),
        reason="qemu-system-x86 or debootstrap missing (scripts/install-deps)",
    ),
]

Record = Dict[str, Any]


def release_tree(into: Path) -> None:
    """The source as an operator unpacks a release on the build host: no .git, no venv."""
    tree = into / "tree"
    tree.mkdir()
    subprocess.run([str(REPO / "scripts" / "copy-source"), str(tree)], check=True)
    with tarfile.open(into / "source.tar.gz", "w:gz") as tar:
        for child in sorted(tree.iterdir()):
            tar.add(str(child), arcname=child.name)
    shutil.rmtree(tree)


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Record:
    """Boot the Kylin-like host once, run the job, and return what it recorded (results.json)."""
    machine = Machine(HOST, ensure_image(HOST), tmp_path_factory.mktemp("kylin"))
    release_tree(machine.job)
    seen = machine.run_recorded("kylin_job.py", JOB_FILES, timeout=1800)
    if os.environ.get("KVMWD_KYLIN_RESULTS"):  # make matrix: the figures committed beside this test
        Path(os.environ["KVMWD_KYLIN_RESULTS"]).write_text(json.dumps(summary(seen), indent=1) + "\n")
    return seen


def stamp(event: Dict[str, str]) -> float:
    return int(event["__REALTIME_TIMESTAMP"]) / 1e6


def timing(seen: Record) -> Dict[str, Any]:
    """The hang against its deadline: when the probe began (the hung event's age), hung, and ended."""
    hung, kill = seen.get("probe_hung"), seen.get("kill_probe")
    if not (hung and kill):
        return {}
    began = stamp(hung) - float(hung["KVMWD_AGE_S"])
    return {
        "deadline_s": DEADLINE_S,
        "found_hung_at_s": round(stamp(hung) - began, 1),
        "ended_at_s": round(stamp(kill) - began, 1),
        "ended_past_deadline_s": round(stamp(kill) - began - DEADLINE_S, 1),
    }


def summary(seen: Record) -> Dict[str, Any]:
    """The figures the closing note and the README quote, committed beside this test."""
    hung = seen.get("probe_hung", {})
    evidence = json.loads(hung["KVMWD_EVIDENCE"]) if hung.get("KVMWD_EVIDENCE") else {}
    vm = seen.get("vm_start_failed", {})
    return {
        "host": seen.get("uname"),
        "cgroup_fs": seen.get("cgroup_fs"),
        "python": seen.get("python37"),
        "systemd_python": seen.get("systemd_python"),
        "emulator": seen.get("emulator"),
        "libvirt": seen.get("libvirt"),
        "rpm": seen.get("rpm"),
        "rpm_site_packages": sorted(
            {f.split("/watchdogd/")[0] for f in seen.get("rpm_files", []) if "/watchdogd/" in f}
        ),
        "launcher": seen.get("launcher"),
        "daemon_exe": seen.get("daemon", {}).get("exe"),
        "pidfd_in_the_unit": seen.get("pidfd_in_the_unit"),
        "probe_cgroup": seen.get("probe", {}).get("cgroup"),
        "probe_ps": seen.get("probe", {}).get("ps"),
        "proof": evidence.get("proof"),
        "diagnosis": {k: evidence.get("diagnosis", {}).get(k) for k in ("stage", "blocked_in", "cause")},
        "kill_detail": seen.get("kill_probe", {}).get("KVMWD_DETAIL"),
        "timing": timing(seen),
        "vm_start_error": seen.get("vm_start", {}).get("error"),
        "vm_start_failed_cause": json.loads(vm["KVMWD_EVIDENCE"])["diagnosis"].get("cause") if vm else None,
        "guest_cgroup": seen.get("guest_cgroup"),
        "guests_counted": seen.get("guests_counted"),
        "left_alone": seen.get("left_alone"),
        "recycled_pid": seen.get("recycled_pid"),
        "stopped": seen.get("stopped"),
        "boot_and_job_s": seen.get("boot_and_job_s"),
    }


def test_the_rpm_built_there_for_python_3_7_installs_a_command_that_runs_it(record: Record) -> None:
    assert record["python37"]["python"] == "3.7.4" and record["python37"]["yaml"] == "5.3.1", record["python37"]
    assert record["python37"]["setuptools"].startswith("44.") and record["systemd_python"] == "234"
    assert record["rpm"] == f"kvm-watchdog-{__version__}-1.noarch.rpm"
    assert "/usr/lib/python3.7/site-packages/watchdogd/__init__.py" in record["rpm_files"]
    assert "python(abi) = 3.7" in record["rpm_requires"]
    assert record["launcher"] == "#!/usr/bin/python3.7 -s" and record["version"] == f"kvm-watchdog {__version__}"
    assert record["config_check"]["rc"] == 0, record["config_check"]
    assert record["daemon"]["exe"] == "/usr/bin/python3.7", record["daemon"]


def test_systemd_runs_cgroup_v1_and_the_daemon_sits_in_its_units_name_systemd_cgroup(record: Record) -> None:
    assert record["cgroup_fs"] == "tmpfs", "the legacy hierarchy: /sys/fs/cgroup is a tmpfs of v1 controllers"
    lines = record["daemon"]["cgroup"].splitlines()
    assert "1:name=systemd:/system.slice/kvm-watchdog.service" in lines, lines
    assert not [line for line in lines if line.startswith("0::") and line != "0::/"], "no unified hierarchy in use"


def test_the_root_run_probe_hung_at_its_chdir_is_proven_by_its_v1_cgroup_and_ended_at_its_deadline(
    record: Record,
) -> None:
    probe = record["probe"]
    assert "1:name=systemd:/system.slice/libvirtd.service" in probe["cgroup"].splitlines(), probe["cgroup"]
    assert any(
        line.split()[:1] == ["root"] and str(probe["pid"]) in line.split()[1:2] for line in probe["ps"].splitlines()
    )
    hung = record["probe_hung"]
    evidence = json.loads(hung["KVMWD_EVIDENCE"])
    assert evidence["proven_libvirt"] is True and "runs in libvirtd.service's cgroup" in evidence["proof"], evidence
    assert evidence["grounds"] == "host", "run as root, as libvirt itself: evidence from below any qemu user"
    diagnosis = evidence["diagnosis"]
    assert (diagnosis["stage"], diagnosis["cause"]) == ("before_ready", "userspace_deadlock"), diagnosis
    kill = record["kill_probe"]
    assert kill["KVMWD_RESULT"] == "ok" and "no pidfd" in kill["KVMWD_DETAIL"], kill["KVMWD_DETAIL"]
    assert record["pidfd_in_the_unit"] == "False", "the unit's filter answers ENOSYS, as 4.19 does"
    when = timing(record)
    assert when["found_hung_at_s"] >= DEADLINE_S and when["ended_past_deadline_s"] < 15, when
    assert record["next_call_rc"] == 0, "capabilities work again"


def test_a_vm_start_aborting_with_the_incidents_pmu_lines_is_told(record: Record) -> None:
    assert record["vm_start"]["rc"] != 0
    evidence = json.loads(record["vm_start_failed"]["KVMWD_EVIDENCE"])
    assert evidence["diagnosis"]["cause"] == "no_in_kernel_vgic", evidence


def test_guests_count_from_machine_slice_and_nothing_of_roots_but_probe_members_is_signalled(record: Record) -> None:
    assert any(line.startswith("1:name=systemd:/machine.slice/") for line in record["guest_cgroup"].splitlines()), (
        record["guest_cgroup"]
    )
    assert record["guests_counted"] == 1
    assert record["left_alone"] == {"guest": True, "bystander": True}, record["left_alone"]
    untouched = {str(pid) for pid in record["left_alone_pids"].values()}
    assert not untouched & set(record["signalled_pids"]), record["signalled_pids"]
    recycled = record["recycled_pid"]
    assert recycled["new_process_alive"] is True and "names another process" in recycled["how"], recycled


def test_restart_reload_and_stop(record: Record) -> None:
    assert record["config_errors"] == 0
    # two stopped events: the restart's and the stop's; MainPID 0 after the stop
    assert record["stopped"] == {"active": "inactive", "result": "success", "events": 2, "main_pid_gone": True}, record[
        "stopped"
    ]
    assert record.get("done"), record.get("journal_tail")
