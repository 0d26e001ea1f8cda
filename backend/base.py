"""The familiar `LabelStudioMLBase` shape, without the `label-studio-ml` package.

`label-studio-ml` 1.0.9 (the last PyPI release) pins Flask 1.1.2, never calls `fit()` for the
"Start training" button (START_TRAINING) or ANNOTATIONS_DELETED, and answers `GET /versions` with 405
(measured in `../shared/docs/label-studio-integration.md` §4.5). This class keeps its outer contract
(`setup`, `predict(tasks, context)`, `fit(event, data)`) so users of the Label Studio examples feel at
home, while `backend.app` speaks the protocol in plain Flask 3.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

# Events that may change what the model should learn from.
from backend.events import TRAIN_EVENTS  # noqa: F401 - re-exported for label-studio-ml-shaped code


class MLBase(ABC):
    """One instance per Label Studio project, kept for the life of the process.

    Label Studio calls `/setup` before every prediction batch, so instances are cached by project
    and label config rather than rebuilt per request (label-studio-ml rebuilds them, which reloads
    heavy clients every time).
    """

    def __init__(self, project_id: int, label_config: str) -> None:
        self.project_id = project_id
        self.label_config = label_config
        self.setup()

    def setup(self) -> None:  # noqa: B027 - optional hook, as in LabelStudioMLBase
        """Build what the model needs; called once per instance."""

    @property
    @abstractmethod
    def model_version(self) -> str:
        """What `/setup` returns; every prediction carries the same string (else LS duplicates them)."""

    @abstractmethod
    def predict(self, tasks: list[dict[str, Any]], context: dict[str, Any] | None = None,
                **kwargs: Any) -> list[list[dict[str, Any]]]:
        """One entry per task, in order: a list of predictions (empty = no prediction for that task)."""

    def fit(self, event: str, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """React to a webhook event; must return fast (Label Studio waits about 1 s)."""
        return {"status": "ignored", "event": event}

    def versions(self) -> list[str]:
        return [self.model_version]
