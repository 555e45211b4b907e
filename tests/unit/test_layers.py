"""The tree is the pipeline: every import points one way, service -> report -> act -> decide -> diagnose -> observe -> shared."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Tuple

PACKAGE = Path(__file__).resolve().parents[2] / "watchdogd"
# "" is the shared layer: config, model, safety, fsafe, state, ...
LAYERS = ["", "observe", "diagnose", "decide", "act", "report", "service"]


def layer_of(module: str) -> int:
    parts = module.split(".")
    if parts[:1] != ["watchdogd"]:
        raise ValueError(module)
    if len(parts) == 1:
        return 0  # watchdogd/__init__.py: the version, nothing else
    if parts[1] == "__main__":
        return len(LAYERS)  # `python -m watchdogd` sits above everything
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else 0


def imports() -> Iterator[Tuple[str, str, int]]:
    """(importer, imported, line) for every import of a watchdogd module inside the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = module if rel.name == "__init__" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.startswith("watchdogd"):
                    if target == "watchdogd" or not node.module:  # from . import x: x may be a module
                        for alias in node.names:
                            full = f"{target}.{alias.name}"
                            yield (
                                module,
                                full
                                if (PACKAGE.parent / full.replace(".", "/")).with_suffix(".py").exists()
                                else target,
                                node.lineno,
                            )
                    else:
                        yield module, target, node.lineno
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("watchdogd"):
                        yield module, alias.name, node.lineno


def test_every_import_points_down_the_pipeline() -> None:
    upward = [f"{a}:{line} imports {b}" for a, b, line in imports() if layer_of(b) > layer_of(a)]
    assert upward == [], "imports that point up the pipeline:\n" + "\n".join(upward)


def test_the_check_sees_the_whole_package() -> None:
    found = list(imports())
    assert len(found) > 60, "the walk found the package's imports"
    assert {layer_of(b) for _, b, _ in found} >= set(range(len(LAYERS))), "every layer is imported by something"


def test_the_shared_layer_imports_no_stage() -> None:
    shared = [(a, b) for a, b, _ in imports() if layer_of(a) == 0 and layer_of(b) != 0]
    assert shared == []


def test_every_finding_kind_has_a_message_id_and_a_catalog_entry() -> None:
    from watchdogd.kinds import FINDING_KINDS
    from watchdogd.report.events import MESSAGE_IDS

    catalog = (PACKAGE.parent / "systemd" / "kvm-watchdog.catalog").read_text()
    for kind in FINDING_KINDS:
        assert kind in MESSAGE_IDS, kind
        assert f"-- {MESSAGE_IDS[kind]}" in catalog, kind


def test_the_readmes_architecture_block_names_every_module_of_the_tree() -> None:
    """The README's picture of watchdogd/ is checked against the tree: a module added or moved shows up there."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    block = readme[readme.index("```\nwatchdogd/\n") : readme.index("```", readme.index("```\nwatchdogd/\n") + 3)]
    words = set(re.findall(r"[a-z_]+(?:\.py|/)?", block))
    package = root / "watchdogd"
    for sub in sorted(p for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        assert f"{sub.name}/" in words, f"README's architecture block lacks {sub.name}/"
        for module in sorted(sub.glob("*.py")):
            if module.stem != "__init__":
                assert module.stem in words, f"README's architecture block lacks {sub.name}/{module.stem}"
    for module in sorted(package.glob("*.py")):
        if module.stem not in ("__init__", "__main__"):
            assert f"{module.stem}.py" in words, f"README's architecture block lacks {module.name}"
