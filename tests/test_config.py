"""An operator edits /etc/kvm-watchdog/config.yaml: every mistake is named with FILE:LINE."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml
from conftest import REPO, run_cli, run_cli_process
from hypothesis import given, settings
from hypothesis import strategies as st

from watchdogd.config import Config, ConfigError, PolicyConfig, parse_config
from watchdogd.service.preflight import load_config

CONTRACT_EXAMPLE = """\
interval: 5s
dry_run: false
state_dir: /var/lib/kvm-watchdog
events: auto
libvirt:
  uri: qemu:///system
  probe_dirs: [/var/lib/libvirt/qemu]
  cache_dir: /var/cache/libvirt/qemu/capabilities
  restart_command: auto
detect:
  probe_hung_after: 60s
  stale_dir_after: 10m
latency:
  enabled: true
  every: 60s
  timeout: 30s
  slow: 5s
policies:
  - name: kill-hung-probes
    on: probe_hung
    do: [kill_probe]
  - name: reset-after-repeated-hangs
    on: probe_hung
    times: 3
    within: 1h
    do: [quarantine_cache, restart_libvirt]
limits:
  actions: 20
  per: 1h
"""


def problems(text: str) -> List[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml")
    return [str(p) for p in info.value.problems]


def test_every_key_is_optional() -> None:
    assert parse_config("", "c.yaml") == Config(source="c.yaml")
    assert parse_config("detect:\n", "c.yaml").detect == Config().detect


def test_the_contract_example_is_the_default() -> None:
    cfg = parse_config(CONTRACT_EXAMPLE, "c.yaml")
    assert cfg == Config(source="c.yaml")
    assert cfg.policies[1] == PolicyConfig(
        name="reset-after-repeated-hangs",
        on="probe_hung",
        do=("quarantine_cache", "restart_libvirt"),
        times=3,
        within=3600.0,
    )


def test_a_misspelt_action_is_named_with_its_line_and_path() -> None:
    third = "  - name: third\n    on: probe_dir_stale\n    do: [kil_probe]\nlimits:"
    text = CONTRACT_EXAMPLE.replace("limits:", third)
    assert problems(text) == [
        "c.yaml:29: policies[2].do[0]: unknown action 'kil_probe' (known: kill_probe, remove_stale_dir, quarantine_cache, restart_libvirt, alert)"
    ]


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "intervall: 5s\n",
            "c.yaml:1: intervall: unknown key (known: actions, detect, diagnose, dry_run, events, hooks, interval, latency, libvirt, limits, metrics, policies, state_dir)",
        ),
        (
            "detect:\n  probe_hung_after: soon\n",
            "c.yaml:2: detect.probe_hung_after: 'soon' is not a duration (use e.g. 30s, 5m, 1h or plain seconds)",
        ),
        ("detect:\n  probe_hung_after: 0\n", "c.yaml:2: detect.probe_hung_after: must be longer than 0, not 0"),
        (
            "detect:\n  hung_after: 5s\n",
            "c.yaml:2: detect.hung_after: unknown key (known here: emulator_names, grace, libvirt_daemons, max_dirs_per_base, probe_hung_after, stale_dir_after)",
        ),
        ("dry_run: maybe\n", "c.yaml:1: dry_run: must be true or false, not 'maybe'"),
        ("state_dir: relative/dir\n", "c.yaml:1: state_dir: must be an absolute path, not 'relative/dir'"),
        ("events: syslog\n", "c.yaml:1: events: must be one of journal, stderr, auto, not 'syslog'"),
        ("limits:\n  actions: many\n", "c.yaml:2: limits.actions: must be a whole number, not 'many'"),
        ("libvirt: qemu:///system\n", "c.yaml:1: libvirt: must be a mapping of keys to values, not 'qemu:///system'"),
        (
            "libvirt:\n  restart_command: systemctl restart libvirtd\n",
            "c.yaml:2: libvirt.restart_command: must be 'auto' or an argv list such as [/bin/systemctl, restart, libvirtd], not 'systemctl restart libvirtd'",
        ),
        ("interval: 5s\ninterval: 6s\n", "c.yaml:2: interval: given twice"),
        (
            "policies:\n  - name: x\n    on: probe_stuck\n    do: [alert]\n",
            "c.yaml:3: policies[0].on: unknown finding kind 'probe_stuck' (known: probe_hung, probe_defunct, probe_dir_stale, domcaps_slow, domcaps_hung, libvirt_unreachable, cache_empty, kernel_changed, domcaps_failed, probe_failed, probe_dir_missing, probe_dirs_flood, vm_start_failed, kvm_unusable)",
        ),
        (
            "policies:\n  - name: x\n    on: cache_empty\n    do: [kill_probe]\n",
            "c.yaml:4: policies[0].do[0]: kill_probe cannot act on cache_empty (it acts on probe_hung, probe_defunct, domcaps_hung)",
        ),
        ("policies:\n  - name: x\n    do: [alert]\n", "c.yaml:2: policies[0]: missing 'on'"),
        (
            "policies:\n  - {name: a, on: probe_hung, do: [alert]}\n  - {name: a, on: probe_hung, do: [alert]}\n",
            "c.yaml:3: policies[1].name: name 'a' already used by policies[0]",
        ),
        ("latency:\n  slow: 40s\n", "c.yaml:2: latency.slow: (40s) must be shorter than latency.timeout (30s)"),
        (
            "=\n",
            "c.yaml:1: not a usable YAML value: could not determine a constructor for the tag 'tag:yaml.org,2002:value'",
        ),
        ("interval: [5s\n", "c.yaml:2: not valid YAML: expected ',' or ']', but got '<stream end>'"),
    ],
)
def test_each_mistake_gets_a_clear_error(text: str, expected: str) -> None:
    assert expected in problems(text)


def test_all_problems_are_reported_not_just_the_first() -> None:
    assert len(problems("interval: soon\nevents: syslog\ndetect:\n  nope: 1\n")) == 3


def test_config_check_prints_file_line_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("detect:\n  probe_hung_after: 1 minute\n")
    result = run_cli("config", "check", str(bad))
    assert result.rc == 2
    assert result.out == "", "problems go to stderr"
    assert (
        result.err.strip()
        == f"{bad}:2: detect.probe_hung_after: '1 minute' is not a duration (use e.g. 30s, 5m, 1h or plain seconds)"
    )
    good = tmp_path / "good.yaml"
    good.write_text(CONTRACT_EXAMPLE)
    assert run_cli("config", "check", str(good)).rc == 0


def test_the_config_file_comes_from_the_flag_then_the_environment(tmp_path: Path) -> None:
    env_cfg = tmp_path / "env.yaml"
    env_cfg.write_text("interval: 7s\n")
    shown = run_cli("config", "show", env={"KVM_WATCHDOG_CONFIG": str(env_cfg)})
    assert "interval: 7s" in shown.out and str(env_cfg) in shown.out
    flag_cfg = tmp_path / "flag.yaml"
    flag_cfg.write_text("interval: 9s\n")
    assert (
        "interval: 9s" in run_cli("-c", str(flag_cfg), "config", "show", env={"KVM_WATCHDOG_CONFIG": str(env_cfg)}).out
    )
    missing = run_cli("-c", str(tmp_path / "nope.yaml"), "config", "show")
    assert missing.rc == 2 and "nope.yaml:0: no such file" in missing.err


def test_config_show_round_trips(tmp_path: Path) -> None:
    shown = run_cli("config", "show", env={"KVM_WATCHDOG_CONFIG": str(REPO / "config" / "kvm-watchdog.yaml")})
    assert shown.rc == 0
    again = tmp_path / "again.yaml"
    again.write_text(shown.out)
    assert load_config(str(again), True) == Config(source=str(again))


def test_binary_or_huge_files_are_refused_cleanly(tmp_path: Path) -> None:
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(binary), True)
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"#" * (2 * 1024 * 1024))
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        load_config(str(huge), True)


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


def test_the_shipped_config_is_valid() -> None:
    path = Path(REPO / "config" / "kvm-watchdog.yaml")
    assert run_cli("config", "check", str(path)).rc == 0


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
