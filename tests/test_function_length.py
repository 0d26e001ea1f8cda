"""Issue 13: no function of the four packages is longer than 60 lines (from `def` to the end of its body).

Checked on the source with `ast`: every function, method and nested function of every module, none skipped.
benchmarks/ and tests/ are not held to it.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("training", "acquisition", "backend", "llmaaa")
MAX_LINES = 60


def long_functions(path: Path, max_lines: int = MAX_LINES) -> list[str]:
    """`path:line name (N lines)` for each function of `path` longer than `max_lines`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{node.lineno} {node.name} "
            f"({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno is not None and node.end_lineno - node.lineno + 1 > max_lines]


def test_no_function_is_longer_than_60_lines() -> None:
    modules = sorted(path for package in PACKAGES for path in (REPO / package).rglob("*.py"))
    assert len(modules) > 50  # the packages were found
    offenders = [found for path in modules for found in long_functions(path)]
    assert offenders == [], "split these functions:\n" + "\n".join(offenders)


def _function(header: str, body_lines: int, indent: str = "") -> list[str]:
    return [f"{indent}{header}"] + [f"{indent}    x{i} = {i}" for i in range(body_lines)]


def test_the_check_counts_from_def_to_the_end_of_the_body_and_sees_methods_and_nested_functions(
        tmp_path: Path) -> None:
    lines = ["@decorated", *_function("def fits():", 59),  # def + 59 lines = 60: allowed; the decorator is not counted
             *_function("def too_long():", 60),
             "class C:", *_function("async def method(self):", 60, "    "),
             "def outer():", *_function("def inner():", 60, "    "), "    return inner"]
    module = tmp_path / "m.py"
    module.write_text("\n".join(lines) + "\n", encoding="utf-8")
    found = sorted(line.split(" ", 1)[1] for line in long_functions(module))
    assert found == ["inner (61 lines)", "method (61 lines)", "outer (63 lines)", "too_long (61 lines)"]
