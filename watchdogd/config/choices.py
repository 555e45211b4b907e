"""The config's choices: a key that takes one of a few words reads into one of these, never a bare string."""

from __future__ import annotations

from ..words import Word


class LatencyWhen(Word):
    """latency.when: when a getDomainCapabilities call may go out (a call resets an idle daemon's timer)."""

    BUSY = "busy"  # only while libvirt runs and is in use anyway (a probe dir, or a guest's QEMU)
    RUNNING = "running"  # whenever a libvirt daemon runs (keeps an idle one awake)
    ALWAYS = "always"  # even when none runs (wakes a socket-activated one)


class KvmSelftest(Word):
    """diagnose.kvm_selftest: whether the daemon tries /dev/kvm at start."""

    AUTO = "auto"  # at start, where /dev/kvm exists
    OFF = "off"


class EventsTo(Word):
    """events: where the structured events go."""

    JOURNAL = "journal"
    STDERR = "stderr"
    AUTO = "auto"  # the journal when its socket exists, else stderr
