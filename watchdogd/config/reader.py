"""The YAML config read into a Config: every problem found, each with FILE:LINE and what is wrong.

Pure: text in, a Config or ConfigError out. What a config asks of this host (its paths'
owners, the signature file, the Prometheus client) is the preflight's, at the composition root.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import yaml

from ..durations import format_duration
from ..kinds import FINDING_KINDS, FORGEABLE_KINDS, Kind
from ..model import ACTIONS, ActionName
from .schema import CONDITION, HOOK_KEYS, POLICY_KEYS, SECTIONS, TOP_LEVEL, Config, HookConfig, PolicyConfig
from .values import Choice, Invalid, Parser

REQUIRED = ("name", "on", "do", "run")  # the keys of a list section's entries that have no default
Items = Dict[str, Tuple[yaml.Node, yaml.Node]]  # a mapping's keys, each with its key node and value node


@dataclass(frozen=True)
class ConfigProblem:
    file: str
    line: int  # 1-based; 0 when the problem is the file as a whole
    where: str  # the key path, e.g. "policies[2].do[0]"
    message: str

    def __str__(self) -> str:
        where = f"{self.where}: " if self.where else ""
        return f"{self.file}:{self.line}: {where}{self.message}"


class ConfigError(Exception):
    """A config that cannot be used; carries every problem found, not just the first."""

    def __init__(self, problems: Sequence[ConfigProblem]):
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class Reader:
    """Walks the YAML node tree so that every problem keeps its line number."""

    def __init__(self, filename: str):
        self.filename = filename
        self.problems: List[ConfigProblem] = []
        self.lines: Dict[str, int] = {}  # where each section and key was given
        self._loader = yaml.SafeLoader("")

    def problem(self, node: Optional[yaml.Node], where: str, message: str) -> None:
        self.problem_at(node.start_mark.line + 1 if node is not None else None, where, message)

    def problem_at(self, line: Optional[int], where: str, message: str) -> None:
        self.problems.append(ConfigProblem(self.filename, line or 0, where, message))

    def value(self, node: yaml.Node) -> Any:
        return self._loader.construct_object(node, deep=True)

    def as_written(self, node: yaml.Node) -> Any:
        """A scalar's text as written (a policy's `on:` key, a choice's `off`: never YAML 1.1's booleans); anything
        else, null included, as read."""
        written = isinstance(node, yaml.ScalarNode) and node.tag != "tag:yaml.org,2002:null"
        return node.value if written else self.value(node)

    def mapping(self, node: yaml.Node, where: str) -> Dict[str, Tuple[yaml.Node, yaml.Node]]:
        """A mapping's items by key, reporting non-string and duplicate keys."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, where, f"must be a mapping of keys to values, not {self.value(node)!r}")
            return {}
        items: Dict[str, Tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = self.as_written(key_node)  # YAML 1.1 would read a policy's `on:` as the boolean true
            if not isinstance(key, str):
                self.problem(key_node, where, f"keys must be names, not {key!r}")
                continue
            if key in items:
                self.problem(key_node, _join(where, key), "given twice")
                continue
            items[key] = (key_node, value_node)
        return items

    def fields(
        self, items: Mapping[str, Tuple[yaml.Node, yaml.Node]], where: str, parsers: Mapping[str, Parser]
    ) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for key, (key_node, value_node) in items.items():
            path = _join(where, key)
            self.lines[path] = value_node.start_mark.line + 1
            parser = parsers.get(key)
            if parser is None:
                self.problem(key_node, path, f"unknown key (known here: {', '.join(sorted(parsers))})")
                continue
            try:
                out[key] = parser(self.as_written(value_node) if isinstance(parser, Choice) else self.value(value_node))
            except Invalid as exc:
                self.problem(value_node, path, str(exc))
        return out

    def entries(
        self, node: yaml.Node, section: str, parsers: Mapping[str, Parser], known_on: Sequence[str]
    ) -> Iterator[Tuple[str, Items, Dict[str, Any]]]:
        """A list section of named entries (policies, hooks): each mapping's key path, items and parsed values, its
        required keys (name, on, and the rest without a default) and a known `on` checked, names unique. An entry
        is yielded only while it has no problem, and its caller's own checks may add one."""
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, section, f"must be a list of {section}")
            return
        seen: Dict[str, int] = {}
        for index, item in enumerate(node.value):
            where = f"{section}[{index}]"
            before = len(self.problems)
            items = self.mapping(item, where)
            values = self.fields(items, where, parsers)
            for required in [k for k in parsers if k in REQUIRED]:
                if required not in items and isinstance(item, yaml.MappingNode):
                    self.problem(item, where, f"missing '{required}'")
            if "on" in values and values["on"] not in known_on:
                self.problem(
                    items["on"][1],
                    f"{where}.on",
                    f"unknown finding kind {values['on']!r} (known: {', '.join(known_on)})",
                )
            if "name" in values and seen.setdefault(values["name"], index) != index:
                self.problem(
                    items["name"][1],
                    f"{where}.name",
                    f"name {values['name']!r} already used by {section}[{seen[values['name']]}]",
                )
            if len(self.problems) == before:
                yield where, items, values

    def policies(self, node: yaml.Node) -> Tuple[PolicyConfig, ...]:
        policies: List[PolicyConfig] = []
        for where, items, values in self.entries(node, "policies", POLICY_KEYS, tuple(FINDING_KINDS)):
            before = len(self.problems)
            values["on"] = Kind(values["on"])  # a known finding kind: entries checked it
            values["do"] = self._actions(items["do"][1], f"{where}.do", values["on"])
            if len(self.problems) == before:
                policies.append(PolicyConfig(**values))
        return tuple(policies)

    def hooks(self, node: yaml.Node) -> Tuple[HookConfig, ...]:
        """hooks: each on the condition or a finding kind, a program by its absolute path."""
        known = (CONDITION,) + tuple(FINDING_KINDS)
        return tuple(HookConfig(**values) for _, _, values in self.entries(node, "hooks", HOOK_KEYS, known))

    def _actions(self, node: yaml.Node, where: str, kind: Kind) -> Tuple[ActionName, ...]:
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            self.problem(node, where, "must be a non-empty list of actions")
            return ()
        actions: List[ActionName] = []
        for index, item in enumerate(node.value):
            given = self.value(item)
            here = f"{where}[{index}]"
            try:
                name = ActionName(given)
            except ValueError:
                self.problem(item, here, f"unknown action {given!r} (known: {', '.join(map(str, ActionName))})")
                continue
            spec = ACTIONS[name]
            if spec.host_wide and kind in FORGEABLE_KINDS:
                self.problem(
                    item,
                    here,
                    f"{name} is host-wide and {kind} is evidence the qemu user can forge; it could never act (see "
                    "docs/THREAT-MODEL.md)",
                )
                continue
            if not spec.acts_on(kind):
                self.problem(item, here, f"{name} cannot act on {kind} (it acts on {', '.join(spec.applies_to or ())})")
                continue
            actions.append(name)
        return tuple(actions)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def parse_config(text: str, filename: str) -> Config:
    """A Config from YAML text, or ConfigError listing every problem with its line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigProblem(filename, line, "", f"not valid YAML: {reason}")]) from None
    if root is None:
        return Config(source=filename)
    reader = Reader(filename)
    try:
        config: Optional[Config] = _read_all(root, reader)
    except yaml.YAMLError as exc:  # e.g. a tag the safe loader cannot construct
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        reason = getattr(exc, "problem", None) or str(exc)
        reader.problems.append(
            ConfigProblem(filename, mark.line + 1 if mark else 0, "", f"not a usable YAML value: {reason}")
        )
    if reader.problems:
        raise ConfigError(reader.problems)
    assert config is not None
    return config


def _read_all(root: yaml.Node, reader: Reader) -> Optional[Config]:
    """Walk the whole document; None when any problem was found."""
    top = reader.mapping(root, "")
    values: Dict[str, Any] = {}
    for key, (key_node, value_node) in top.items():
        if key in TOP_LEVEL:
            values.update(reader.fields({key: (key_node, value_node)}, "", TOP_LEVEL))
        elif key in SECTIONS:
            cls, parsers = SECTIONS[key]
            reader.lines[key] = value_node.start_mark.line + 1
            if isinstance(value_node, yaml.ScalarNode) and reader.value(value_node) is None:
                continue  # "detect:" with nothing under it: all defaults
            values[key] = cls(**reader.fields(reader.mapping(value_node, key), key, parsers))
        elif key == "policies":
            values["policies"] = reader.policies(value_node)
        elif key == "hooks":
            values["hooks"] = reader.hooks(value_node)
        else:
            known = sorted(list(TOP_LEVEL) + list(SECTIONS) + ["policies", "hooks"])
            reader.problem(key_node, key, f"unknown key (known: {', '.join(known)})")
    if reader.problems:
        return None
    config = Config(source=reader.filename, lines=reader.lines, **values)
    _check_consistency(config, reader)
    return config


def _check_consistency(config: Config, reader: Reader) -> None:
    """Rules between keys, reported at the key that would have to change."""
    latency = config.latency
    at = config.lines.get("latency")
    if latency.slow >= latency.timeout:
        reader.problem_at(
            at,
            "latency.slow",
            f"({format_duration(latency.slow)}) must be shorter than latency.timeout "
            f"({format_duration(latency.timeout)})",
        )
    if latency.enabled and latency.every < latency.timeout:
        every, timeout = format_duration(latency.every), format_duration(latency.timeout)
        reader.problem_at(
            at, "latency.every", f"({every}) must be at least latency.timeout ({timeout}): one probe in flight at most"
        )
