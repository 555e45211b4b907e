"""The house's size rules, over the package as it is: a module that grows past them is split, not waved through."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Tuple

PACKAGE = Path(__file__).resolve().parents[2] / "watchdogd"
MAX_LINES = 350
MAX_PARAMS = 7  # a function's, self and cls not counted
MAX_COLLABORATORS = 6  # a constructor's: more, and the class has more than one job


def functions() -> Iterator[Tuple[str, ast.FunctionDef]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                yield f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}", node


def params(node: ast.FunctionDef) -> int:
    a = node.args
    names = [x.arg for x in getattr(a, "posonlyargs", []) + a.args + a.kwonlyargs]  # 3.7 has none
    return len(names[1:] if names[:1] in (["self"], ["cls"]) else names)


def test_no_module_is_over_350_lines() -> None:
    lines = {str(p.relative_to(PACKAGE.parent)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    long = {name: n for name, n in lines.items() if n > MAX_LINES}
    assert long == {}


def test_no_function_takes_over_7_parameters_and_no_constructor_over_6() -> None:
    over = [
        f"{where}: {params(node)}"
        for where, node in functions()
        if params(node) > (MAX_COLLABORATORS if node.name == "__init__" else MAX_PARAMS)
    ]
    assert over == []


def test_the_rules_see_what_they_count() -> None:
    """A rule that counts nothing passes for ever: the package has functions at the limits' edges."""
    counted = [params(node) for _, node in functions()]
    assert len(counted) > 300 and max(counted) >= 5
