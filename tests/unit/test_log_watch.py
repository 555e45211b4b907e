"""A domain's log growing wakes the loop (inotify), even when libvirt makes the log dir after the daemon started."""

from __future__ import annotations

from pathlib import Path

from watchdogd.observe.watch import DirWatch


def test_a_log_dir_made_later_is_watched_from_its_making_and_its_logs_wake_the_loop(tmp_path: Path) -> None:
    probes = tmp_path / "lib"
    probes.mkdir()
    logs = tmp_path / "log" / "qemu"
    (tmp_path / "log").mkdir()
    watch = DirWatch([str(probes)], log_dir=str(logs))
    try:
        assert watch.why_polling is None and not watch.watching_logs
        logs.mkdir()
        assert watch.changed().logs and watch.watching_logs, (
            "the log dir's making is seen, and it is watched from then on"
        )
        (logs / "vm1.log").write_text("starting up\n")
        first = watch.changed()
        assert first.logs and not first.probes
        (logs / "vm1.log.1").write_text("rotated\n")
        assert not watch.changed().logs, "a rotated file is history"
        with open(logs / "vm1.log", "a") as f:
            f.write("PMU: KVM_SET_DEVICE_ATTR: Invalid argument\n")
        assert watch.changed().logs
        (probes / "qmp-ABC123").mkdir()
        assert watch.changed().probes
    finally:
        watch.close()
