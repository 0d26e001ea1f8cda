"""The project's trained student: where its versions live, and loading the one that is published."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.state import ProjectState
from training.store import ModelStore

log = logging.getLogger(__name__)


def model_store(data_dir: Path, project_id: int) -> ModelStore:
    return ModelStore(Path(data_dir) / "projects" / str(project_id) / "models")


@dataclass
class StudentHandle:
    version: str
    model: Any  # training.model.StudentTagger
    metrics: dict[str, Any] = field(default_factory=dict)
    sentence_weights: dict[str, float] = field(default_factory=dict)


def load_student(data_dir: Path, project_id: int, version: str) -> StudentHandle:
    store = model_store(data_dir, project_id)
    return StudentHandle(version, store.load(version), store.metrics(version), store.sentence_weights(version))


def load_latest_student(data_dir: Path, project_id: int) -> StudentHandle | None:
    """The published version (project state), else none: an unpublished version is never used."""
    version = ProjectState(data_dir, project_id).get("student_version")
    if not version:
        return None
    return load_student(data_dir, project_id, version)


class StudentCache:
    """Hot swap without a restart: reload when the published version changes, keep the old one on error."""

    def __init__(self, data_dir: Path, project_id: int) -> None:
        self.data_dir, self.project_id = Path(data_dir), project_id
        self._handle: StudentHandle | None = None
        self._lock = threading.Lock()

    def current(self, version: str | None) -> StudentHandle | None:
        if not version:
            return None
        with self._lock:
            if self._handle is None or self._handle.version != version:
                try:
                    self._handle = load_student(self.data_dir, self.project_id, version)
                    log.info("project %s: now serving student %s", self.project_id, version)
                except Exception as exc:  # noqa: BLE001 - a broken version must not stop serving
                    log.error("project %s: cannot load student %s (%s); keeping %s", self.project_id, version,
                              exc, self._handle.version if self._handle else "the LLM")
            return self._handle
