"""Why a probe hung, from what its processes were doing: pure, so it is tested on recorded captures.

- stage: `before_ready` while qemu's first process still waits on the daemonize pipe
  for the daemon's "started" (the incident); `after_ready` once it has gone: the
  daemon said it was ready, and libvirt's QMP session never completed.
- blocked_in: the syscall the daemon's main thread sits in.
- cause: `uninterruptible` (a thread in D state: the kernel holds it, SIGKILL will
  not end it), `kvm_ioctl` (a thread blocked in an ioctl on a KVM fd: the kernel),
  `userspace_deadlock` (before_ready, the main thread in futex, no KVM ioctl in
  flight: a lock in qemu itself, as the incident's tcmalloc spin-lock),
  `qmp_unanswered` (after_ready), else `unknown`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

from ..causes import Cause
from ..model import Probe, Role
from ..observe.capture import Capture, ProcessCapture

WHAT_TO_DO: Dict[Cause, str] = {
    Cause.USERSPACE_DEADLOCK: (
        "QEMU deadlocked in itself right after daemonizing, before any KVM work (the incident's shape: a malloc "
        "spin-lock). Ending the probe releases libvirt, but the next probe will hang the same way: roll back the "
        "emulator or the library that changed with it (check `kvm-watchdog diagnose` for the package versions), "
        "or the kernel if it changed."
    ),
    Cause.KVM_IOCTL: (
        "QEMU is blocked in a KVM ioctl: the kernel's KVM does not answer. Boot the last kernel on which probing "
        "worked, and report the kernel's KVM regression."
    ),
    Cause.UNINTERRUPTIBLE: (
        "A QEMU thread is in uninterruptible sleep (D): the kernel holds it, and SIGKILL will not end it. "
        "The host needs a reboot (into the last good kernel); the watchdog does not retry the kill."
    ),
    Cause.QMP_UNANSWERED: (
        "QEMU reported it was ready, but never answered libvirt's monitor (QMP). Ending the probe releases "
        "libvirt; if it repeats, look at the emulator's QMP handling (its version) and at libvirt's log."
    ),
    Cause.HELD: (
        "A process of the probe is stopped (SIGSTOP) or traced by a debugger: it is held by its own uid or by "
        "whoever debugs it, not hung by the kernel or the emulator. It is ended like any probe whose processes "
        "are that uid's own, on the budget for evidence that uid could make, and it never counts toward a libvirt "
        "restart or a cache quarantine. If it repeats, find who stops the qemu user's processes."
    ),
    Cause.UNKNOWN: (
        "No known shape matched: ending the probe releases libvirt; keep the incident bundle for a bug report."
    ),
}


@dataclass(frozen=True)
class Diagnosis:
    stage: str
    blocked_in: Optional[str]
    cause: Cause
    detail: str  # a sentence of what was seen
    kernel_said: Optional[str] = None  # the kernel's hung-task line of a member: in D state for minutes

    @property
    def what_to_do(self) -> str:
        return WHAT_TO_DO[self.cause]

    def to_json(self) -> Dict[str, object]:
        out: Dict[str, object] = {
            "stage": self.stage,
            "blocked_in": self.blocked_in,
            "cause": self.cause,
            "what_to_do": self.what_to_do,
            "detail": self.detail,
        }
        if self.kernel_said is not None:
            out["kernel_said"] = self.kernel_said
        return out


def _daemon(probe: Probe, capture: Capture) -> Optional[ProcessCapture]:
    daemons = [m.process.pid for m in probe.members if m.role == Role.DAEMON]
    found = [p for p in capture.processes if p.pid in daemons]
    return found[0] if found else (capture.processes[-1] if capture.processes else None)


def classify(probe: Probe, capture: Capture) -> Diagnosis:
    first_waits = any(m.role == Role.FIRST and not m.process.is_zombie for m in probe.members)
    stage = "before_ready" if first_waits else "after_ready"
    daemon = _daemon(probe, capture)
    main = daemon.main if daemon is not None else None
    blocked_in = main.syscall if main is not None else None
    threads = [t for p in capture.processes for t in p.threads]
    stuck = [t for t in threads if t.state == "D"]
    kvm_fds = {(p.pid, fd) for p in capture.processes for fd in p.kvm_fds}
    in_kvm = [
        (p.pid, t)
        for p in capture.processes
        for t in p.threads
        if t.syscall == "ioctl" and (p.pid, t.syscall_fd) in kvm_fds
    ]
    if probe.held:
        return Diagnosis(stage, blocked_in, Cause.HELD, probe.held)
    if stuck:
        where = ", ".join(f"thread {t.tid} at {t.wchan or 'an unreadable wchan'}" for t in stuck[:3])
        return Diagnosis(stage, blocked_in, Cause.UNINTERRUPTIBLE, f"in uninterruptible sleep: {where}")
    if in_kvm:
        pid, t = in_kvm[0]
        return Diagnosis(
            stage,
            blocked_in,
            Cause.KVM_IOCTL,
            f"thread {t.tid} of {pid} is blocked in an ioctl on KVM fd {t.syscall_fd}",
        )
    if stage == "before_ready" and blocked_in == "futex":
        return Diagnosis(
            stage,
            blocked_in,
            Cause.USERSPACE_DEADLOCK,
            "the first process waits for the daemon's \"started\"; the daemon's main thread waits on a futex, no KVM "
            "ioctl in flight",
        )
    if stage == "after_ready":
        return Diagnosis(
            stage,
            blocked_in,
            Cause.QMP_UNANSWERED,
            f"the daemon reported ready and sits in {blocked_in or 'an unknown call'}",
        )
    return Diagnosis(
        stage,
        blocked_in,
        Cause.UNKNOWN,
        f"the daemon's main thread sits in {blocked_in or 'an unknown call'}",
    )
