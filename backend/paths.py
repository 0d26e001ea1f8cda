"""Where a project's state lives under `LLMAAA_DATA_DIR`: one place, so no caller joins paths by hand."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProjectPaths:
    data_dir: Path
    project_id: int

    @property
    def root(self) -> Path:
        return Path(self.data_dir) / "projects" / str(self.project_id)

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def llm_labels(self) -> Path:
        return self.root / "llm_labels.sqlite3"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def pool_scores(self) -> Path:
        return self.root / "pool-scores"
