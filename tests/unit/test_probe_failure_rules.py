"""libvirt's probe-failure entries and the kernel's own lines, as pure rules: whose entry counts, what words mean."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Dict, Sequence

from watchdogd.config import Config
from watchdogd.decide.assess import assess
from watchdogd.diagnose.diagnostician import Diagnostician, Readers
from watchdogd.diagnose.history import KernelHistory
from watchdogd.diagnose.signatures import UNMATCHED, explain, load, match
from watchdogd.model import Observation
from watchdogd.observe.capture import Capturer
from watchdogd.observe.kernel_journal import KernelLine
from watchdogd.observe.libvirt_journal import PROBE_FAILED_ID, Trust, failure_of
from watchdogd.state import StateStore

BINARY = "/usr/libexec/qemu-kvm"
SAID = "Could not access KVM kernel module: Permission denied\nqemu-kvm: failed to initialize kvm: Permission denied"


def entry(**overrides: object) -> Dict[str, object]:
    """An entry as systemd-python's reader gives it: journald's own fields converted (ints, a datetime)."""
    fields: Dict[str, object] = {
        "MESSAGE_ID": PROBE_FAILED_ID,
        "MESSAGE": f"Failed to probe capabilities for {BINARY}: internal error: Failed to start QEMU binary {BINARY} "
        f"for probing: {SAID}",
        "LIBVIRT_QEMU_BINARY": BINARY,
        "_UID": 0,
        "_COMM": "libvirtd",
        "_PID": 1234,
        "_SYSTEMD_UNIT": "libvirtd.service",
        "_TRANSPORT": "journal",
        "__REALTIME_TIMESTAMP": datetime.datetime(2026, 12, 5, 12, 0, tzinfo=datetime.timezone.utc),
    }
    fields.update(overrides)
    return fields


SYSTEM = Trust(0, ("libvirtd", "virtqemud"), ("libvirtd.service", "virtqemud.service"))


def test_only_a_root_libvirt_daemon_in_its_unit_is_believed() -> None:
    assert SYSTEM.why_not(entry()) is None
    assert SYSTEM.why_not(entry(_UID=64055)) == "uid 64055", "the qemu user, whatever it names its program"
    assert SYSTEM.why_not(entry(_COMM="logger")) is not None
    assert SYSTEM.why_not(entry(_SYSTEMD_UNIT="session-3.scope")) is not None, "root, but not libvirt's unit"
    assert SYSTEM.why_not(entry(_TRANSPORT="syslog")) is not None
    session = Trust(1001, ("libvirtd",), None)
    assert session.why_not(entry(_UID=1001, _SYSTEMD_UNIT=None)) is None, "a session libvirt runs in no unit of its own"


def test_the_failure_keeps_the_binary_libvirts_words_and_qemus_own() -> None:
    failure = failure_of(entry())
    assert failure is not None and failure.binary == BINARY and failure.pid == 1234
    assert failure.qemu_said == SAID and failure.when == 1796472000.0
    assert failure_of(entry(LIBVIRT_QEMU_BINARY=None)) is None, "an entry without the binary names nothing to resolve"


def test_qemus_words_give_the_cause_and_unknown_words_say_how_to_find_it() -> None:
    table = load(None)
    assert explain(SAID, table)[0] == "kvm_unavailable"
    assert explain("libvirt: error : cannot execute binary /usr/libexec/qemu-kvm: Permission denied", table)[0] == (
        "emulator_not_executable"
    )
    assert explain("accel_init_ops_interfaces: assertion failed: (ops != NULL)", table)[0] == "accel_unavailable"
    assert explain("qemu: cannot create PID file: Cannot open pid file: Permission denied", table)[0] == (
        "pidfile_denied"
    )
    assert explain("something nobody has seen", table) == UNMATCHED


def test_the_kernels_lines_recorded_on_the_arm64_host_name_its_missing_gicv2() -> None:
    recorded = json.loads((Path(__file__).parent.parent / "arm64-results.json").read_text())["kernel_said"]
    lines = [line.split("] ", 1)[1] for line in recorded]  # dmesg's time stamp off: the journal's MESSAGE
    found = {m.signature.cause for m in match(lines, load(None, "kernel"))}
    assert found == {"no_in_kernel_vgic"}, "only `kvm [1]: disabling GICv2 emulation` of the six"
    assert [m.signature.cause for m in match(["kvm: disabled by bios"], load(None, "kernel"))] == [
        "kvm_disabled_by_firmware"
    ]


def _diagnostician(tmp_path: Path, kernel_lines: Sequence[str]) -> Diagnostician:
    """A diagnostician on a host with no /dev/kvm, whose kernel said `kernel_lines` at boot."""
    state = StateStore(str(tmp_path / "state"))
    readers = Readers(
        Capturer(str(tmp_path)),
        device=lambda: False,
        kernel=lambda: ([KernelLine(0.0, line) for line in kernel_lines], None),
    )
    return Diagnostician(Config(), state, readers, load(None), KernelHistory.load(state))


def test_no_dev_kvm_and_the_kernel_saying_why_at_boot_opens_kvm_unusable_with_its_line(tmp_path: Path) -> None:
    """KVM refused at boot (virtualization off in the firmware) leaves no /dev/kvm for the self-test to try."""
    seen = _diagnostician(tmp_path, ["kvm: no hardware support", "kvm: disabled by bios"]).insight(
        Observation(taken_wall=100.0)
    )
    assert seen.kvm is not None and not seen.kvm.usable
    [finding] = [f for f in assess(Observation(taken_wall=100.0), Config(), seen) if f.kind == "kvm_unusable"]
    assert "the kernel said at boot 'kvm: disabled by bios' (kvm_disabled_by_firmware)" in finding.message
    quiet = _diagnostician(tmp_path, ["Hypervisor detected: KVM"]).insight(Observation(taken_wall=100.0))
    assert quiet.kvm is None, "no /dev/kvm and no word from the kernel: a host without KVM is not news"
