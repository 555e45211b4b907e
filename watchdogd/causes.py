"""The causes the watchdog itself diagnoses: one word each, in the journal, the metrics and the verdict.

A domain's log line or a kernel line gets its cause from the signature table instead (data an operator
may extend: diagnose/signatures.yaml); these are the ones the code decides.
"""

from __future__ import annotations

from typing import Tuple

from .words import Word


class Cause(Word):
    # why a probe hung, from what its processes were doing (diagnose/classify.py)
    USERSPACE_DEADLOCK = "userspace_deadlock"
    KVM_IOCTL = "kvm_ioctl"
    UNINTERRUPTIBLE = "uninterruptible"
    QMP_UNANSWERED = "qmp_unanswered"
    HELD = "held"
    UNKNOWN = "unknown"
    # the KVM self-test failed
    KVM_UNUSABLE = "kvm_unusable"
    # `diagnose`'s verdict when nothing is wrong
    HEALTHY = "healthy"


HUNG_PROBE_CAUSES: Tuple[Cause, ...] = (
    Cause.USERSPACE_DEADLOCK,
    Cause.KVM_IOCTL,
    Cause.UNINTERRUPTIBLE,
    Cause.QMP_UNANSWERED,
    Cause.HELD,
    Cause.UNKNOWN,
)
