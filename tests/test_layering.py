"""docs/architecture.md: dependencies flow one way, training <- acquisition <- backend <- llmaaa.

Checked on the source (every import, also the lazy ones inside functions), not by importing it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAYERS = ("training", "acquisition", "backend", "llmaaa")  # each may import only those before it


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """The top-level packages `path` imports (absolute imports), with line numbers."""
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
    return found


@pytest.mark.parametrize("layer", LAYERS[:-1])
def test_no_layer_imports_a_layer_above_it(layer: str) -> None:
    above = set(LAYERS[LAYERS.index(layer) + 1 :])
    breaks = [f"{path.relative_to(REPO)}:{line} imports {pkg}"
              for path in sorted((REPO / layer).rglob("*.py"))
              for pkg, line in sorted(imported_packages(path)) if pkg in above]
    assert breaks == []


def test_the_check_sees_lazy_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from llmaaa.documents import import_documents\n    import backend.cli\n",
                      encoding="utf-8")
    assert imported_packages(module) == {("llmaaa", 2), ("backend", 3)}
