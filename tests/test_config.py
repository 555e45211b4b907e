"""An operator edits /etc/kvm-watchdog/config.yaml: what the config check asks of the host (an old
prometheus-client, files others could write, a FIFO), and any text or YAML shape fuzzed; the parser's own rules
are tests/unit/test_config_rules.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml
from harness.cli import run_cli, run_cli_process
from harness.configs import CONTRACT_EXAMPLE
from hypothesis import given, settings
from hypothesis import strategies as st

from watchdogd.config import ConfigError, parse_config


def test_config_check_refuses_metrics_with_a_prometheus_client_too_old_to_run_them(tmp_path: Path) -> None:
    """Debian 11's python3-prometheus-client is 0.9.0: `run` died at its start with an ImportError, in a restart loop."""
    cache = Path("/var/cache/kvm-watchdog-test/prometheus-client-0.9.0")
    if not (cache / "prometheus_client").is_dir():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--target",
                str(cache),
                "prometheus-client==0.9.0",
            ],
            check=True,
            timeout=300,
        )
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"state_dir: {tmp_path}/state\nmetrics:\n  textfile: {tmp_path}/kvm-watchdog.prom\n")
    old = run_cli_process("config", "check", str(cfg), env={"PYTHONPATH": str(cache)})
    assert old.rc == 2 and f"{cfg}:3: metrics: needs prometheus-client >= 0.16, found 0.9.0" in old.out + old.err, (
        old.out + old.err
    )
    assert run_cli_process("config", "check", str(cfg)).rc == 0, "the client this venv has (>= 0.16) runs them"


def test_a_config_others_could_write_is_refused_for_root_runs_its_restart_command(tmp_path: Path) -> None:
    """As sshd's StrictModes: a config owned by another uid, writable by group or others, or below a dir others
    can write is refused with what to do; root owning it, 0644, in a sticky /tmp, is taken."""
    good = tmp_path / "good.yaml"
    good.write_text(CONTRACT_EXAMPLE)
    good.chmod(0o644)
    assert run_cli("config", "check", str(good)).rc == 0
    cases = {}
    writable = tmp_path / "writable.yaml"
    writable.write_text(CONTRACT_EXAMPLE)
    writable.chmod(0o666)
    cases[writable] = "is writable by its group or others (mode 0666)"
    foreign = tmp_path / "foreign.yaml"
    foreign.write_text(CONTRACT_EXAMPLE)
    os.chown(foreign, 65534, 65534)  # nobody's, though 0644
    cases[foreign] = "is owned by uid 65534"
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    below = open_dir / "below.yaml"
    below.write_text(CONTRACT_EXAMPLE)
    cases[below] = f"lies in {open_dir}, which is writable by its group or others (mode 0777)"
    link = tmp_path / "link.yaml"
    link.symlink_to(good)
    cases[link] = "is a symbolic link"
    for path, why in cases.items():
        refused = run_cli("config", "check", str(path))
        assert refused.rc == 2 and f"{path}:0: refused: {path} {why}" in refused.err, refused.err


def test_a_signature_table_that_is_a_fifo_is_refused_at_once_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "signatures.yaml"
    os.mkfifo(fifo)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"diagnose:\n  signatures: {fifo}\n")
    started = time.monotonic()
    refused = run_cli_process("config", "check", str(cfg), timeout=30)
    took = time.monotonic() - started
    assert refused.rc == 2 and f"{fifo}: refused: {fifo} is not a regular file" in refused.err, refused.err
    print(f"a FIFO signature table refused in {took:.2f} s")  # a figure, never a bound: the timeout above is


# ---- fuzz (hypothesis: the slow lane, which runs on the distro's Python with its test tools) -------------


@pytest.mark.hostile
@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_a_config_or_a_clear_error(text: str) -> None:
    try:
        parse_config(text, "fuzz.yaml")
    except ConfigError as exc:
        assert exc.problems and all(str(p).startswith("fuzz.yaml:") for p in exc.problems)


_keys = st.sampled_from(
    ["interval", "detect", "policies", "latency", "probe_hung_after", "on", "do", "name", "times", "x"]
)
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=10),
    st.sampled_from(["5s", "kill_probe", "probe_hung"]),
)
_trees = st.recursive(
    _leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=20,
)


@pytest.mark.hostile
@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _trees, max_size=5))
def test_any_yaml_shape_is_a_config_or_a_clear_error(tree: Dict[str, Any]) -> None:
    try:
        parse_config(yaml.safe_dump(tree), "fuzz.yaml")
    except ConfigError as exc:
        assert exc.problems
