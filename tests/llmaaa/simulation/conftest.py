"""Make `llmaaa.simulation` the package, not this test folder.

pytest (prepend import mode) puts `tests/` on sys.path for `tests/conftest.py`; `tests/llmaaa/` (no
`__init__.py`) then becomes a namespace package `llmaaa` that shadows the editable install, and
`tests/llmaaa/simulation/` shadows `llmaaa.simulation`. Other subpackages still resolve through the
editable finder, so only this one needs loading from its file. A no-op once the import works (e.g. with
`pythonpath = ["."]` in the pytest config).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[3] / "llmaaa" / "simulation"

try:
    importlib.import_module("llmaaa.simulation.noise")
except ModuleNotFoundError:
    for name in [m for m in sys.modules if m == "llmaaa.simulation" or m.startswith("llmaaa.simulation.")]:
        del sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        "llmaaa.simulation", PACKAGE / "__init__.py", submodule_search_locations=[str(PACKAGE)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["llmaaa.simulation"] = module
    spec.loader.exec_module(module)
