"""An operator edits /etc/kvm-watchdog/config.yaml: every mistake is named with FILE:LINE (pure: the parser and the
CLI in this process, on files of the test's own)."""

from __future__ import annotations

from pathlib import Path
from typing import List

import pytest
from harness.cli import REPO, run_cli
from harness.configs import CONTRACT_EXAMPLE

from watchdogd.config import Config, ConfigError, PolicyConfig, parse_config
from watchdogd.config.choices import KvmSelftest
from watchdogd.kinds import Kind
from watchdogd.model import ActionName
from watchdogd.service.preflight import load_config


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
        on=Kind.PROBE_HUNG,
        do=(ActionName.QUARANTINE_CACHE, ActionName.RESTART_LIBVIRT),
        times=3,
        within=3600.0,
    )


def test_a_misspelt_action_is_named_with_its_line_and_path() -> None:
    third = "  - name: third\n    on: probe_dir_stale\n    do: [kil_probe]\nlimits:"
    text = CONTRACT_EXAMPLE.replace("limits:", third)
    assert problems(text) == [
        "c.yaml:29: policies[2].do[0]: unknown action 'kil_probe' (known: kill_probe, remove_stale_dir, quarantine_cache, restart_libvirt, alert)"
    ]


def test_a_choice_is_read_as_written_where_yaml_1_1_would_read_a_boolean() -> None:
    """`kvm_selftest: off`, as the shipped config's comment spells it, is the word off, never YAML 1.1's false."""
    assert parse_config("diagnose:\n  kvm_selftest: off\n", "c.yaml").diagnose.kvm_selftest is KvmSelftest.OFF
    assert parse_config("diagnose:\n  kvm_selftest: 'off'\n", "c.yaml").diagnose.kvm_selftest is KvmSelftest.OFF
    assert problems("diagnose:\n  kvm_selftest: no\n") == [
        "c.yaml:2: diagnose.kvm_selftest: must be one of auto, off, not 'no'"
    ]
    assert problems("events: [journal]\n") == [
        "c.yaml:1: events: must be one of journal, stderr, auto, not ['journal']"
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


def test_the_shipped_config_is_valid() -> None:
    path = Path(REPO / "config" / "kvm-watchdog.yaml")
    assert run_cli("config", "check", str(path)).rc == 0
