"""An in-memory stand-in for the label-studio-sdk client, at the SDK boundary, for stage tests.

It implements only the calls the backend makes, with Label Studio 1.23.2's rules that the stages rely on
(verified against the real server in the integration tests and docs/predictions.md):
- `import_predictions` stores every item it gets and reports `created`;
- `projects.update(model_version=...)` refuses a version no prediction carries (LS answers 400);
- `next_task` follows "Uncertainty sampling": only tasks with a prediction at the project's version, lowest
  score first; when none is left, any unannotated task (LS falls back to random order).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any


@dataclass
class FakeProject:
    id: int
    label_config: str
    model_version: str = ""
    sampling: str = "Sequential sampling"


class FakeLabelStudio:
    def __init__(self, label_config: str, project_id: int = 1) -> None:
        self.project = FakeProject(project_id, label_config)
        self.task_rows: dict[int, dict[str, Any]] = {}
        self.prediction_rows: dict[int, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.fail_on: set[str] = set()
        self._ids = itertools.count(1)
        self.projects = SimpleNamespace(get=self._project_get, update=self._project_update,
                                        import_predictions=self._import_predictions)
        self.tasks = SimpleNamespace(list=self._tasks_list, update=self._task_update, get=self._task_get)
        self.predictions = SimpleNamespace(list=self._predictions_list, delete=self._prediction_delete)
        # The raw HTTP calls the SDK has no method for (backend.labelstudio._raw).
        self._client_wrapper = SimpleNamespace(httpx_client=SimpleNamespace(request=self._raw_request))

    def _check(self, call: str) -> None:
        self.calls.append(call)
        if call in self.fail_on:
            raise ConnectionError(f"Label Studio is down ({call})")

    # ------------------------------------------------------------ projects
    def _project_get(self, id: int) -> FakeProject:
        self._check("projects.get")
        return self.project

    def _project_update(self, id: int, **changes: Any) -> None:
        self._check("projects.update")
        version = changes.get("model_version")
        if version and not any(p["model_version"] == version for p in self.prediction_rows.values()):
            raise ValueError(f"400: model version {version!r} has no predictions")
        for key, value in changes.items():
            setattr(self.project, key, value)

    def _import_predictions(self, id: int, request: list[dict[str, Any]]) -> Any:
        self._check("projects.import_predictions")
        for pred in request:
            pid = next(self._ids)
            self.prediction_rows[pid] = {"id": pid, **pred}
        return SimpleNamespace(created=len(request))

    # ------------------------------------------------------------ tasks
    def _task_view(self, task: dict[str, Any]) -> dict[str, Any]:
        preds = [p for p in self.prediction_rows.values() if p["task"] == task["id"]]
        return {**task, "predictions": [dict(p) for p in preds]}

    def _tasks_list(self, project: int, fields: str = "all") -> list[dict[str, Any]]:
        self._check("tasks.list")
        return [self._task_view(t) for t in self.task_rows.values()]

    def _task_get(self, id: int) -> dict[str, Any]:
        self._check("tasks.get")
        return self._task_view(self.task_rows[id])

    def _task_update(self, id: int, data: dict[str, Any]) -> None:
        self._check("tasks.update")
        self.task_rows[id]["data"] = dict(data)

    # ------------------------------------------------------------ predictions
    def _predictions_list(self, project: int) -> list[Any]:
        self._check("predictions.list")
        return [SimpleNamespace(**p) for p in self.prediction_rows.values()]

    def _prediction_delete(self, id: int) -> None:
        self._check("predictions.delete")
        del self.prediction_rows[id]

    def _raw_request(self, path: str, method: str, json: dict[str, Any] | None = None) -> Any:
        self._check(f"{method} {path.split('/')[-2]}")
        if path != f"api/projects/{self.project.id}/model-versions/":
            raise AssertionError(f"the fake knows no {method} {path}")
        if method == "GET":
            counts: dict[str, int] = {}
            for p in self.prediction_rows.values():
                counts[p["model_version"]] = counts.get(p["model_version"], 0) + 1
            body: Any = counts
        else:
            version = (json or {})["model_version"]
            doomed = [pid for pid, p in self.prediction_rows.items() if p["model_version"] == version]
            for pid in doomed:
                del self.prediction_rows[pid]
            body = {"deleted_predictions": len(doomed)}  # what Label Studio 1.23.2 answers
        return SimpleNamespace(content=b"1", json=lambda: body, raise_for_status=lambda: None)

    # ------------------------------------------------------------ what an annotator meets
    def add_task(self, task_id: int, text: str, annotation: list[dict[str, Any]] | None = None) -> None:
        anns = [] if annotation is None else [{"id": task_id * 10, "result": annotation, "was_cancelled": False}]
        self.task_rows[task_id] = {"id": task_id, "data": {"text": text}, "annotations": anns}

    def shown_prediction(self, task_id: int) -> dict[str, Any] | None:
        """The pre-label the labeling stream shows: the task's prediction at the project's version."""
        for p in self.prediction_rows.values():
            if p["task"] == task_id and p["model_version"] == self.project.model_version:
                return p
        return None

    def next_task(self) -> int | None:
        todo = [t for t in self.task_rows.values() if not t["annotations"]]
        if self.project.sampling == "Uncertainty sampling":
            ranked = [(p["score"], p["task"]) for p in self.prediction_rows.values()
                      if p["model_version"] == self.project.model_version
                      and not self.task_rows[p["task"]]["annotations"]]
            if ranked:
                return min(ranked)[1]
        return todo[0]["id"] if todo else None
