"""Kinds, causes and roles are types in the code and words everywhere else: the journal, JSON, YAML, metrics."""

from __future__ import annotations

import json
from typing import Dict

from watchdogd.causes import HUNG_PROBE_CAUSES, Cause
from watchdogd.config import Config
from watchdogd.config.schema import to_yaml
from watchdogd.decide.ledger import FindingLedger
from watchdogd.kinds import KINDS, Kind
from watchdogd.model import Role


def test_a_kind_prints_as_its_word_on_every_python() -> None:
    # Python 3.11 prints a plain str-mixin enum as "Kind.PROBE_HUNG" in an f-string; 3.7 as its value
    assert f"{Kind.PROBE_HUNG}" == "probe_hung" and f"{Kind.PROBE_HUNG:>12}" == "  probe_hung"
    assert str(Cause.HELD) == "held" and f"{Role.DAEMON}" == "daemon" and "x=" + Kind.PROBE_HUNG == "x=probe_hung"
    assert json.dumps({Kind.CACHE_EMPTY: Cause.UNKNOWN}) == '{"cache_empty": "unknown"}'


def test_a_word_read_back_is_its_member() -> None:
    assert Kind("probe_hung") is Kind.PROBE_HUNG and Cause("kvm_ioctl") is Cause.KVM_IOCTL
    recorded: Dict[str, int] = {Kind.PROBE_HUNG: 1}
    assert recorded.get("probe_hung") == 1, "a word from a state file finds its kind"
    assert set(KINDS) == set(Kind) and len(HUNG_PROBE_CAUSES) == 6


def test_the_effective_config_dumps_kinds_as_words() -> None:
    text = to_yaml(Config())
    assert "'on': probe_hung" in text and "    cache_empty: 30s" in text and "Kind" not in text


def test_a_state_file_naming_a_kind_this_version_lacks_drops_that_entry_only() -> None:
    entry = {"subject": "/l/qmp-AAAAAA", "since_wall": 1.0, "opened_at": 2.0}
    ledger = FindingLedger.from_json([dict(entry, kind="probe_hung"), dict(entry, kind="retired_kind")])
    assert [o.finding.kind for o in ledger.open.values()] == [Kind.PROBE_HUNG]
