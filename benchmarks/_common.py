"""Helpers shared by the benchmarks: data location, an in-thread simulated LLM, result files."""

from __future__ import annotations

import json
import logging
import os
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("LLMAAA_SHARED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "benchmarks" / "results"


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """A threaded WSGI server on a free loopback port; yields its base URL."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request drowns output
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


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
