"""Helpers shared by the benchmarks: data location, an in-thread simulated LLM, result files."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from llmaaa.services import serve_in_thread

__all__ = ["DATA", "REPO", "RESULTS", "claim_run", "machine", "serve_in_thread", "write_result"]

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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_run(out: Path) -> bool:
    """Claim a grid run for this process; False if finished (`results.json`) or claimed by a live process.

    Several processes (one per core) share one run list this way. A claim whose owner died (a killed grid,
    an ended session) is taken over, so the run resumes from its `progress.json`."""
    if (out / "results.json").exists():
        return False
    out.mkdir(parents=True, exist_ok=True)
    marker = out / ".claimed"
    for _ in range(2):
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = int(marker.read_text().strip() or "0")
            except (OSError, ValueError):
                owner = 0
            if owner and _alive(owner):
                return False
            try:  # a rename succeeds for one of several processes taking over the same dead claim
                os.replace(marker, out / f".stale-claim.{os.getpid()}")
            except FileNotFoundError:
                return False
            (out / f".stale-claim.{os.getpid()}").unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False
