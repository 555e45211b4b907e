"""Kernels before 5.3 (Kylin V10 and openEuler 20.03 run 4.19) have no pidfd: the kill re-reads the start time
before each signal instead. A PID recycled between the scan and the kill names another process: it is left alone."""

from __future__ import annotations

import os

import pytest
from harness.recycled_pid import refused_without_pidfd

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="recycling a PID on purpose writes ns_last_pid (root)")


def test_without_pidfd_a_recycled_pid_is_refused_and_the_process_that_has_it_now_is_left_alone() -> None:
    said = refused_without_pidfd()
    assert said["ended"] is True and said["new_process_alive"] is True, said
    assert said["how"] == "already gone (its PID now names another process, which was left alone)", said
