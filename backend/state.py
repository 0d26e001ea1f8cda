"""Per-project state shared by the backend, the CLI and RQ workers: which model version is current.

It lives in files under `LLMAAA_DATA_DIR/projects/<id>/state.json`, written atomically, so every process
that shares the data directory (one machine, or a shared volume) agrees on the version that `/setup`
returns and the predictions carry.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any


class ProjectState:
    def __init__(self, data_dir: Path, project_id: int) -> None:
        self.dir = Path(data_dir) / "projects" / str(project_id)
        self.path = self.dir / "state.json"
        self._lock = threading.Lock()
        self._cache: tuple[float, dict[str, Any]] | None = None

    def read(self) -> dict[str, Any]:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return {}
        if self._cache and self._cache[0] == mtime:
            return dict(self._cache[1])
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}  # a reader never sees a half-written file (atomic rename), so this is a corrupt one
        self._cache = (mtime, data)
        return dict(data)

    def update(self, **changes: Any) -> dict[str, Any]:
        with self._lock:
            data = {**self.read(), **changes}
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".state-", suffix=".json")
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=2, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            return data

    def get(self, key: str, default: Any = None) -> Any:
        return self.read().get(key, default)
