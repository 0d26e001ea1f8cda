"""Helpers shared by the benchmarks: data location, an in-thread simulated LLM, result files."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from llmaaa.services import serve_in_thread

__all__ = ["DATA", "REPO", "RESULTS", "machine", "serve_in_thread", "write_result"]

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("LLMAAA_SHARED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "benchmarks" / "results"


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()}


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**payload, "machine": machine()}, indent=2))
    return path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]
