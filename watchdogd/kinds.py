"""The finding kinds: what each is, in one table the assessor, the config, the policy, the ledger and the
metrics read."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Dict, Tuple

from .words import Word


class Severity(enum.IntEnum):
    INFO = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def label(self) -> str:
        return self.name.lower()


class Kind(Word):
    """A finding's kind: the contract's stable names, and the ones beyond it."""

    PROBE_HUNG = "probe_hung"
    PROBE_DEFUNCT = "probe_defunct"
    PROBE_DIR_STALE = "probe_dir_stale"
    DOMCAPS_SLOW = "domcaps_slow"
    DOMCAPS_HUNG = "domcaps_hung"
    LIBVIRT_UNREACHABLE = "libvirt_unreachable"
    CACHE_EMPTY = "cache_empty"
    KERNEL_CHANGED = "kernel_changed"
    # beyond the contract's list
    DOMCAPS_FAILED = "domcaps_failed"
    PROBE_FAILED = "probe_failed"
    PROBE_DIR_MISSING = "probe_dir_missing"
    PROBE_DIRS_FLOOD = "probe_dirs_flood"
    VM_START_FAILED = "vm_start_failed"
    KVM_UNUSABLE = "kvm_unusable"


@dataclass(frozen=True)
class KindSpec:
    """What a finding kind is."""

    severity: Severity
    # the daemon opens it only once its condition has held this long (seconds; detect.grace overrides):
    # where a moment of it is normal
    grace: float = 0.0
    # only libvirt itself (or root's own state) produces it: proven whatever the qemu user does
    libvirt_level: bool = False
    # never proof, whatever is seen: what it rests on is the qemu user's to make (its dirs, its logs)
    forgeable: bool = False


KINDS: Dict[Kind, KindSpec] = {
    Kind.PROBE_HUNG: KindSpec(Severity.CRITICAL),
    Kind.PROBE_DEFUNCT: KindSpec(Severity.WARNING),
    Kind.PROBE_DIR_STALE: KindSpec(Severity.WARNING, forgeable=True),
    Kind.DOMCAPS_SLOW: KindSpec(Severity.WARNING, libvirt_level=True),
    Kind.DOMCAPS_HUNG: KindSpec(Severity.CRITICAL, libvirt_level=True),
    # a restarting libvirt does not answer for a few seconds
    Kind.LIBVIRT_UNREACHABLE: KindSpec(Severity.CRITICAL, grace=30.0, libvirt_level=True),
    # empty until the first probe after a start finishes
    Kind.CACHE_EMPTY: KindSpec(Severity.WARNING, grace=30.0),
    Kind.KERNEL_CHANGED: KindSpec(Severity.INFO, libvirt_level=True),
    # libvirt answered getDomainCapabilities with an error (a probe failed, not hung)
    Kind.DOMCAPS_FAILED: KindSpec(Severity.CRITICAL, grace=10.0, libvirt_level=True),
    # libvirt's journal says a probe of a binary failed (subject: the binary), not probed well since
    Kind.PROBE_FAILED: KindSpec(Severity.CRITICAL, libvirt_level=True),
    # a configured probe dir has not existed for longer than stale_dir_after
    Kind.PROBE_DIR_MISSING: KindSpec(Severity.WARNING, forgeable=True),
    # more qmp-XXXXXX dirs in one base than detect.max_dirs_per_base: one finding, with the count
    Kind.PROBE_DIRS_FLOOD: KindSpec(Severity.WARNING, forgeable=True),
    # a domain's QEMU log shows a known start-up failure signature (subject: the domain)
    Kind.VM_START_FAILED: KindSpec(Severity.WARNING, forgeable=True),
    # the KVM self-test failed
    Kind.KVM_UNUSABLE: KindSpec(Severity.CRITICAL, libvirt_level=True),
}
# views of the table, for the readers that need only one column
FINDING_KINDS: Dict[Kind, Severity] = {kind: spec.severity for kind, spec in KINDS.items()}
DEFAULT_GRACE: Dict[Kind, float] = {kind: spec.grace for kind, spec in KINDS.items() if spec.grace}
LIBVIRT_LEVEL_KINDS: Tuple[Kind, ...] = tuple(kind for kind, spec in KINDS.items() if spec.libvirt_level)
FORGEABLE_KINDS: Tuple[Kind, ...] = tuple(kind for kind, spec in KINDS.items() if spec.forgeable)
