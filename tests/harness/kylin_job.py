"""The incident's own host family, as root inside the Kylin-like VM (harness/vm.py, `qemu-kvm-cgroup-v1`).

Kylin V10 / openEuler 20.03 LTS: python3.7 with PyYAML 5.3.1 and python-systemd 234, systemd with
cgroup v1 (the legacy hierarchy), qemu.conf's `user = "root"` (probes run as root), the emulator at
/usr/libexec/qemu-kvm (every call names it), and no pidfd (the unit's
pidfd_open and pidfd_send_signal answer ENOSYS, as a 4.19 kernel does). The operator's steps: build the
RPM on the host itself from the release tree with its python3.7, install it, `systemctl enable --now`;
then the real QEMU probe held at its chdir("/") is found, said why and ended at its deadline, a VM start
that fails with the incident's PMU lines is told, a root process named like the emulator and a guest of
libvirt's are left alone, a recycled PID is refused, and restart, reload and stop work. Everything is
recorded into results.json; tests/test_kylin.py judges it.

Usage (inside): python3 kylin_job.py JOBDIR
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional

if TYPE_CHECKING:
    from harness.vm_job import Record, alive, arm, journal
    from harness.wait import wait_for
else:  # the harness's own, copied beside this file
    from vm_job import Record, alive, arm, journal
    from wait import wait_for

JOB = sys.argv[1] if len(sys.argv) > 1 else "/mnt/job"
EMULATOR = "/usr/libexec/qemu-kvm"  # the fault-injecting stand-in, where RHEL's family ships qemu-kvm
REAL = "/usr/lib/kvmwd/qemu-kvm"  # the real QEMU, through a link of that name (its comm: qemu-kvm)
VIRSH = "virsh -c qemu:///system"
NO_PIDFD = "[Service]\nSystemCallFilter=~pidfd_open:ENOSYS pidfd_send_signal:ENOSYS\n"
DOMAIN = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><emulator>/usr/libexec/qemu-kvm</emulator></devices>
</domain>
"""
record = Record(JOB)
results = record.results
sh = record.sh


def main_pid() -> int:
    return int(sh("systemctl show -p MainPID --value kvm-watchdog").stdout.strip() or 0)


def scans() -> int:
    try:
        with open("/var/lib/kvm-watchdog/scan.json") as f:
            seen = json.load(f)
    except (OSError, ValueError):
        return 0
    return int(seen["scans"]) if seen.get("pid") == main_pid() else 0


def scan_field(name: str) -> Any:
    with open("/var/lib/kvm-watchdog/scan.json") as f:
        return json.load(f).get(name)


def the_host() -> None:
    """What makes it the incident's host family: the cgroup layout, the Python and its libraries."""
    results["uname"] = os.uname().machine + " " + os.uname().release
    results["cgroup_fs"] = sh("stat -fc %T /sys/fs/cgroup").stdout.strip()  # tmpfs: v1; cgroup2fs: unified
    results["pid1_cgroup"] = open("/proc/1/cgroup").read()
    results["python37"] = json.loads(
        sh(
            "python3.7 -c 'import json, platform, yaml, setuptools, libvirt, systemd.journal; print(json.dumps("
            '{"python": platform.python_version(), "yaml": yaml.__version__, "setuptools": setuptools.__version__,'
            ' "libvirt_python": libvirt.getVersion()}))\''
        ).stdout
    )
    results["systemd_python"] = sh("python3.7 -m pip show systemd-python | sed -n 's/^Version: //p'").stdout.strip()
    results["pidfd_on_this_kernel"] = sh("python3 -c 'import os; os.close(os.pidfd_open(1))'", check=False).returncode


def the_emulator_and_root_probes() -> None:
    """qemu-kvm at /usr/libexec; qemu.conf's user and group root. The real QEMU is reached through a link named
    qemu-kvm (so its comm is qemu-kvm, as on Kylin): QEMU 7.2 finds its accelerator modules relative to its own
    binary, which a moved copy breaks ("could not load module for type 'tcg-accel-ops'", seen here)."""
    sh(f"mkdir -p /usr/lib/kvmwd && ln -s /usr/bin/qemu-system-x86_64 {REAL}")
    sh(f"install -m 755 {JOB}/fake_qemu.py {EMULATOR} && echo {REAL} > {EMULATOR}.real && echo none > {EMULATOR}.fault")
    sh(f"gcc -shared -fPIC -O2 -o {EMULATOR}.hang.so {JOB}/chdir_hang.c -ldl")
    sh('printf \'user = "root"\\ngroup = "root"\\n\' >> /etc/libvirt/qemu.conf && systemctl restart libvirtd')
    results["emulator"] = sh(f"{REAL} --version").stdout.splitlines()[0]
    results["libvirt"] = sh("libvirtd --version").stdout.strip()


def the_rpm_built_here() -> None:
    """The release tree, built into an RPM by the host's own python3.7 (setuptools 44, no pyproject macros)."""
    sh(f"mkdir -p /tmp/src && tar -xzf {JOB}/source.tar.gz -C /tmp/src")
    sh("cd /tmp/src && PYTHON=/usr/bin/python3.7 scripts/build-rpm /tmp/rpms", timeout=900)
    [rpm] = glob.glob("/tmp/rpms/kvm-watchdog-*.noarch.rpm")
    results["rpm"] = os.path.basename(rpm)
    results["rpm_files"] = sh(f"rpm -qpl {rpm}").stdout.splitlines()
    results["rpm_requires"] = sh(f"rpm -qp --requires {rpm}").stdout.splitlines()
    sh(f"rpm -i --nodeps {rpm}")  # Debian's rpm database knows none of python3-libvirt and the rest: dpkg has them
    with open("/usr/bin/kvm-watchdog") as f:
        results["launcher"] = f.readline().strip()
    results["version"] = sh("kvm-watchdog --version").stdout.strip()
    check = sh("kvm-watchdog config check", check=False)
    results["config_check"] = {"rc": check.returncode, "out": check.stdout + check.stderr}


def enabled_without_pidfd() -> None:
    """The unit as shipped, but pidfd answering ENOSYS (a 4.19 kernel has neither syscall)."""
    sh("mkdir -p /etc/systemd/system/kvm-watchdog.service.d")
    with open("/etc/systemd/system/kvm-watchdog.service.d/no-pidfd.conf", "w") as f:
        f.write(NO_PIDFD)
    sh("systemctl daemon-reload && systemctl enable --now kvm-watchdog")
    wait_for(lambda: sh("systemctl is-active kvm-watchdog", check=False).stdout.strip() == "active", 120, "active")
    wait_for(lambda: scans() >= 1, 120, "a first scan", poll=0.5)
    pid = main_pid()
    results["daemon"] = {
        "exe": os.readlink(f"/proc/{pid}/exe"),
        "cmdline": open(f"/proc/{pid}/cmdline").read().replace("\0", " ").strip(),
        "cgroup": open(f"/proc/{pid}/cgroup").read(),
    }
    # the daemon's own python3.7, asked the way the process ender asks, inside the unit's seccomp filter
    probe = "import os, sys; sys.path[:0] = ['/usr/lib/python3.7/site-packages']; " + (
        "from watchdogd.act.process_ender import _pidfd_supported as s; print(s())"
    )
    said = sh(
        f"systemd-run --wait --pipe -q -p 'SystemCallFilter=~pidfd_open:ENOSYS pidfd_send_signal:ENOSYS' "
        f'/usr/bin/python3.7 -c "{probe}"',
        check=False,
    )
    results["pidfd_in_the_unit"] = said.stdout.strip() or said.stderr.strip()


def guests_and_bystanders() -> Dict[str, int]:
    """A guest of libvirt's (TCG, in machine.slice) and a root process named qemu-kvm that is no probe's."""
    with open("/tmp/guest1.xml", "w") as f:
        f.write(DOMAIN.format(name="guest1"))
    sh(f"{VIRSH} define /tmp/guest1.xml && {VIRSH} start guest1", timeout=300)
    guest = int(sh("cat /run/libvirt/qemu/guest1.pid").stdout.strip())
    results["guest_cgroup"] = open(f"/proc/{guest}/cgroup").read()
    wait_for(lambda: scan_field("guests") == 1, 60, "the guest counted", poll=0.5)
    results["guests_counted"] = scan_field("guests")
    sh("cp /bin/sleep /tmp/qemu-kvm")
    bystander = subprocess.Popen(["/tmp/qemu-kvm", "3600"], start_new_session=True).pid
    return {"guest": guest, "bystander": bystander}


def the_probe() -> Optional[Dict[str, Any]]:
    """The probe's daemon as ps and the kernel show it, once its pidfile names it."""
    for pidfile in glob.glob("/var/lib/libvirt/qemu/qmp-*/qmp.pid"):
        try:
            pid = int(open(pidfile).read().strip())
            cgroup = open(f"/proc/{pid}/cgroup").read()
        except (OSError, ValueError):
            continue
        ps = sh("ps -eo user,pid,ppid,stat,args | grep -e qmp- | grep -v grep", check=False).stdout
        return {"pidfile": pidfile, "pid": pid, "cgroup": cgroup, "ps": ps}
    return None


def the_hang() -> None:
    """The real QEMU probe, held at its chdir("/") as the incident's was, at the shipped 60 s deadline."""
    sh(f"{VIRSH} domcapabilities --emulatorbin {EMULATOR} > /dev/null", timeout=300)  # a healthy probe first
    arm(EMULATOR, "real-hang 1")
    results["probe_asked_at"] = time.time()
    subprocess.Popen(
        [
            "/bin/sh",
            "-c",
            f"{VIRSH} domcapabilities --emulatorbin {EMULATOR} > /tmp/waiting.out 2>&1; echo $? > /tmp/waiting.rc",
        ],
        start_new_session=True,
    )
    results["probe"] = wait_for(the_probe, 120, "the probe's daemon", poll=0.2)
    record.save()
    results["probe_hung"] = wait_for(lambda: journal(KVMWD_EVENT="probe_hung", KVMWD_STATE="open"), 300, "hung")[0]
    results["kill_probe"] = wait_for(lambda: journal(KVMWD_EVENT="action", KVMWD_ACTION="kill_probe"), 120, "kill")[0]
    wait_for(lambda: journal(KVMWD_EVENT="probe_hung", KVMWD_STATE="resolved"), 120, "resolved", poll=0.5)
    wait_for(lambda: os.path.exists("/tmp/waiting.rc"), 300, "the waiting virsh to return", poll=1.0)
    results["waiting_virsh_rc"] = open("/tmp/waiting.rc").read().strip()
    results["next_call_rc"] = sh(
        f"{VIRSH} domcapabilities --emulatorbin {EMULATOR} > /dev/null", timeout=300, check=False
    ).returncode
    record.save()


def a_vm_start_that_fails() -> None:
    """The incident's last symptom: a VM start that aborts with the PMU lines."""
    sh(f"echo pmu > {EMULATOR}.vmfault")
    with open("/tmp/pmu.xml", "w") as f:
        f.write(DOMAIN.format(name="pmufail"))
    sh(f"{VIRSH} define /tmp/pmu.xml", timeout=120)
    start = sh(f"{VIRSH} start pmufail", timeout=300, check=False)
    results["vm_start"] = {"rc": start.returncode, "error": start.stderr.strip()}
    opened = wait_for(lambda: journal(KVMWD_EVENT="vm_start_failed", KVMWD_STATE="open"), 120, "vm_start_failed")
    results["vm_start_failed"] = opened[0]
    sh(f"rm -f {EMULATOR}.vmfault")


def restart_reload_stop() -> None:
    before = main_pid()
    sh("systemctl restart kvm-watchdog")
    wait_for(lambda: main_pid() not in (0, before) and scans() >= 1, 120, "the restarted daemon's scans", poll=0.5)
    reloaded = len(journal(KVMWD_EVENT="config_reloaded"))
    sh("sed -i 's/^  probe_hung_after: 60s$/  probe_hung_after: 90s/' /etc/kvm-watchdog/config.yaml")
    sh("systemctl reload kvm-watchdog")
    wait_for(lambda: len(journal(KVMWD_EVENT="config_reloaded")) > reloaded, 60, "config_reloaded", poll=0.5)
    results["config_errors"] = len(journal(KVMWD_EVENT="config_error"))
    sh("systemctl stop kvm-watchdog")
    results["stopped"] = {
        "active": sh("systemctl is-active kvm-watchdog", check=False).stdout.strip(),
        "result": sh("systemctl show -p Result --value kvm-watchdog").stdout.strip(),
        "events": len(journal(KVMWD_EVENT="stopped")),
        "main_pid_gone": main_pid() == 0,
    }


def main() -> None:
    the_host()
    the_emulator_and_root_probes()
    the_rpm_built_here()
    enabled_without_pidfd()
    left_alone = guests_and_bystanders()
    the_hang()
    a_vm_start_that_fails()
    results["left_alone"] = {name: alive(pid) for name, pid in left_alone.items()}
    signalled: List[str] = [p for a in journal(KVMWD_EVENT="action") for p in a.get("KVMWD_PIDS", "").split(",") if p]
    results["signalled_pids"] = signalled
    results["left_alone_pids"] = left_alone
    results["recycled_pid"] = json.loads(
        sh(f"cd /tmp && PYTHONPATH={JOB} python3.7 {JOB}/recycled_pid.py").stdout.strip().splitlines()[-1]
    )
    restart_reload_stop()
    # what the story started, ended by PID and name: a guest with no OS never answers the shutdown that
    # libvirt-guests would wait out at power-off
    sh(f"{VIRSH} destroy guest1 && kill {left_alone['bystander']}")


if __name__ == "__main__":
    record.run(main)
