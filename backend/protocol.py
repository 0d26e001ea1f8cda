"""The ML-backend request bodies, checked before anything acts on them.

Every check raises `BadRequest` with a message that names the field and what was expected, so a
malformed request gets a JSON 4xx and changes nothing. The shapes are the ones Label Studio 1.23.2
sends (see ../shared/docs/label-studio-integration.md §4.2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backend.events import KNOWN_EVENTS
from backend.labelstudio import project_id_of

# Task and annotation ids go into SQLite INTEGER columns (signed 64 bit).
MAX_ROW_ID = 2**63 - 1


class BadRequest(ValueError):
    """A malformed request; answered with `status` and the message, nothing else happens."""

    status = 400


class TooManyTasks(BadRequest):
    status = 413


@dataclass(frozen=True)
class SetupRequest:
    project_id: int
    schema: str
    hostname: str | None
    access_token: str | None


@dataclass(frozen=True)
class PredictRequest:
    project_id: int
    tasks: list[dict[str, Any]]
    label_config: str | None
    context: dict[str, Any] | None


@dataclass(frozen=True)
class WebhookRequest:
    action: str
    project_id: int
    label_config: str | None
    body: dict[str, Any]


def _project(value: Any, field: str = "project") -> int:
    try:
        return project_id_of(value)
    except ValueError as exc:
        raise BadRequest(f"`{field}`: {exc}") from exc


def _optional(body: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = body.get(key)
    if value is not None and not isinstance(value, kind):
        raise BadRequest(f"`{key}` must be {what}, not {type(value).__name__}")
    return value


def _row_id(value: Any, field: str, required: bool = False) -> None:
    if value is None and not required:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ROW_ID:
        raise BadRequest(f"`{field}` must be a non-negative integer id")


def setup_request(body: Mapping[str, Any]) -> SetupRequest:
    project_id = _project(body.get("project"))
    schema = body.get("schema")
    if not isinstance(schema, str) or not schema.strip():
        raise BadRequest("`schema` (the project's labeling config) must be a non-empty XML string")
    hostname = _optional(body, "hostname", str, "a URL string") or None
    if hostname is not None and not hostname.startswith(("http://", "https://")):
        raise BadRequest("`hostname` must be an http:// or https:// URL")
    token = _optional(body, "access_token", str, "a string") or None
    return SetupRequest(project_id, schema, hostname, token)


def predict_request(body: Mapping[str, Any], max_tasks: int) -> PredictRequest:
    tasks = body.get("tasks")
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise BadRequest("`tasks` must be a list of task objects")
    if max_tasks > 0 and len(tasks) > max_tasks:
        raise TooManyTasks(f"{len(tasks)} tasks in one request, the limit is {max_tasks} (MAX_TASKS_PER_REQUEST): "
                           "select fewer tasks, or pre-annotate in bulk with `llmaaa acquire`")
    for i, task in enumerate(tasks):
        _optional(task, "data", dict, f"an object (tasks[{i}].data)")
        _row_id(task.get("id"), f"tasks[{i}].id")
    project = body.get("project")
    if project is None and tasks:
        project = tasks[0].get("project")
    project_id = _project(project)
    label_config = _optional(body, "label_config", str, "the labeling config XML string")
    params = _optional(body, "params", dict, "an object")
    context = _optional(params or {}, "context", dict, "an object (params.context)")
    return PredictRequest(project_id, tasks, label_config, context)


def webhook_request(body: Mapping[str, Any]) -> WebhookRequest:
    action = body.get("action")
    if not isinstance(action, str) or action not in KNOWN_EVENTS:
        shown = repr(action)[:60] if isinstance(action, str | None) else type(action).__name__
        raise BadRequest(f"unknown or missing `action`: {shown}")
    project = body.get("project")
    if not isinstance(project, dict):
        raise BadRequest("`project` must be the project object (with `id`), as Label Studio sends it")
    project_id = _project(project, "project.id")
    label_config = _optional(project, "label_config", str, "the labeling config XML string (project.label_config)")
    if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
        task, annotation = body.get("task"), body.get("annotation")
        if not isinstance(annotation, dict) or not isinstance(task, dict):
            raise BadRequest(f"{action} needs `annotation` and `task` objects")
        _row_id(task.get("id"), "task.id", required=True)
        _optional(task, "data", dict, "an object (task.data)")
        _row_id(annotation.get("id"), "annotation.id")
        _optional(annotation, "result", list, "a list of regions (annotation.result)")
    if action == "ANNOTATIONS_DELETED":
        annotations = body.get("annotations")
        if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
            raise BadRequest("ANNOTATIONS_DELETED needs an `annotations` list of objects")
        for i, ann in enumerate(annotations):
            _row_id(ann.get("id"), f"annotations[{i}].id")
    return WebhookRequest(action, project_id, label_config, dict(body))
