"""`llmaaa setup-project`: a Label Studio NER project wired to this backend, through the SDK."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from label_studio_sdk import LabelStudio

from backend.events import WEBHOOK_ACTIONS
from backend.labeling_config import NOT_ASKED, STATUS_KEY, build_label_config, load_labels_file, parse_label_config
from backend.labelstudio import (
    LabelStudioError,
    explain,
    iter_tasks,
)
from backend.settings import Settings
from training.spans import tokens_to_text

log = logging.getLogger(__name__)

ML_TITLE = "llmaaa"


def read_task_texts(path: Path, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Tasks from a `../shared/data`-style jsonl (tokens joined by spaces) or a plain-text file (a line a task).

    Each task keeps `ref_id` (file stem and line number) so that importing again adds nothing twice.
    """
    count = 0
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh):
            if limit is not None and count >= limit:
                return
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno + 1}: not JSON ({exc.msg})") from exc
                if "tokens" in row:
                    text, _ = tokens_to_text(row["tokens"])
                elif isinstance(row.get("text"), str):
                    text = row["text"]
                else:
                    raise ValueError(f"{path}:{lineno + 1}: needs `tokens` or `text`")
            else:
                text = line.rstrip("\n")
            count += 1
            yield {"text": text, "ref_id": f"{path.stem}-{lineno}", STATUS_KEY: NOT_ASKED}


@dataclass
class SetupReport:
    project_id: int
    created_project: bool
    imported: int
    skipped_existing: int
    ml_backend_id: int | None
    webhook_ids: list[int] = field(default_factory=list)
    preannotated: int = 0
    not_annotated: int = 0
    model_version: str | None = None
    review_view_id: int | None = None


def find_project(ls: LabelStudio, title: str) -> Any | None:
    for project in ls.projects.list():
        if getattr(project, "title", None) == title:
            return project
    return None


def ensure_project(ls: LabelStudio, title: str, label_config: str) -> tuple[int, bool]:
    try:
        project = find_project(ls, title)
        if project is None:
            created = ls.projects.create(title=title, label_config=label_config,
                                         description="NER pre-annotated by llmaaa (LLM active annotator)")
            return int(created.id), True
        if project.label_config != label_config:
            ls.projects.update(id=project.id, label_config=label_config)
        return int(project.id), False
    except LabelStudioError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, f"creating project {title!r}") from exc


def import_tasks(ls: LabelStudio, project_id: int, tasks: Sequence[dict[str, Any]],
                 batch: int = 500) -> tuple[int, int]:
    existing = {(t.get("data") or {}).get("ref_id") for t in iter_tasks(ls, project_id, fields="task_only")}
    new = [t for t in tasks if t["ref_id"] not in existing]
    try:
        for i in range(0, len(new), batch):
            ls.projects.import_tasks(id=project_id, request=new[i : i + batch])
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, "importing tasks") from exc
    return len(new), len(tasks) - len(new)


def connect_backend(ls: LabelStudio, project_id: int, backend_url: str, settings: Settings) -> int:
    try:
        for ml in ls.ml.list(project=project_id):
            if (ml.url or "").rstrip("/") == backend_url.rstrip("/"):
                return int(ml.id)
        auth: dict[str, Any] = {}
        if settings.basic_auth_user:
            auth = {"auth_method": "BASIC_AUTH", "basic_auth_user": settings.basic_auth_user,
                    "basic_auth_pass": settings.basic_auth_pass.get_secret_value()
                    if settings.basic_auth_pass else ""}
        ml = ls.ml.create(project=project_id, url=backend_url, title=ML_TITLE, is_interactive=True,
                          auto_update=True, **auth)
        return int(ml.id)
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, f"connecting the ML backend at {backend_url}") from exc


def ensure_webhook(ls: LabelStudio, project_id: int, backend_url: str, settings: Settings) -> list[int]:
    """Creating the ML backend made `<url>/webhook` for all events; add our secret header to it.

    If no such webhook exists (e.g. the backend was connected by hand), register one.
    """
    url = backend_url.rstrip("/") + "/webhook"
    headers = {}
    if settings.webhook_secret:
        headers[settings.webhook_secret_header] = settings.webhook_secret.get_secret_value()
    try:
        ids = []
        for hook in ls.webhooks.list(project=str(project_id)):
            if (hook.url or "").rstrip("/") == url:
                if headers and (hook.headers or {}) != headers:
                    ls.webhooks.update(id=hook.id, url=url, headers=headers)
                ids.append(int(hook.id))
        if not ids:
            hook = ls.webhooks.create(project=project_id, url=url, send_payload=True,
                                      send_for_all_actions=False, actions=WEBHOOK_ACTIONS, headers=headers)
            ids.append(int(hook.id))
        return ids
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, f"registering the webhook {url}") from exc


REVIEW_VIEW = "LLM review: least trusted first"
WEIGHT_FIELD = "tasks:data.llm_label_weight"


def ensure_review_view(ls: LabelStudio, project_id: int) -> int | None:
    """A Data Manager tab that lists LLM-labelled tasks by learned weight, least trusted first.

    Label Studio types every data column it does not render as "Unknown" (a "str" badge) whatever the JSON
    value; a tab's `columnsDisplayType` marks `llm_label_weight` as a number, so it sorts numerically on
    PostgreSQL too (data_manager/managers.py `apply_ordering`).
    """
    try:
        for view in ls.views.list(project=project_id):
            if (getattr(view, "data", None) or {}).get("title") == REVIEW_VIEW:
                return int(view.id)
        view = ls.views.create(project=project_id, data={
            "title": REVIEW_VIEW, "ordering": [WEIGHT_FIELD], "filters": {"conjunction": "and", "items": []},
            "columnsDisplayType": {WEIGHT_FIELD: "Number"}})
        return int(view.id)
    except Exception as exc:  # noqa: BLE001 - a convenience tab; the project works without it
        log.warning("project %s: could not create the review tab: %s", project_id, exc)
        return None


def preannotate(ls: LabelStudio, project_id: int, settings: Settings, limit: int,
                progress: bool = True, services: Any = None) -> tuple[int, int, str]:
    """Push LLM pre-annotations for the first `limit` unannotated tasks without one at the current version.

    Label Studio's own pull path stores one row at a time inside a 100 s request, so bulk work is pushed
    (backend.queue_publisher). Returns (stored, not annotated, model version).
    """
    from backend.composition import Services
    from backend.project_snapshot import read_project, split_verified
    from backend.queue_publisher import QueueItem, add_to_current
    from backend.retrier import mark_status

    services = services or Services(settings)
    labels = services.llm_labels(project_id)
    snapshot = read_project(ls, project_id, services.schema, labels.all())
    demos = services.demo_index(split_verified(snapshot.verified, settings.retrain_holdout_fraction).meta)
    annotator = services.project_annotator(project_id, snapshot.schema, demos)
    version = services.state(project_id).get("model_version") or annotator.llm_version
    todo = [t for t in snapshot.unlabeled
            if not any(p.get("model_version") == version for p in t.get("predictions") or [])][:limit]
    outcomes = annotator.annotate_tasks(todo, concurrency=settings.llm_concurrency, progress=progress)
    items = [QueueItem(int(t["id"]), snapshot.text_of(t) or "", o.spans)
             for t, o in zip(todo, outcomes, strict=True) if o.ok]
    stored = add_to_current(ls, project_id, snapshot.schema, version, items)
    try:
        mark_status(ls, labels, todo, outcomes, settings.llm_retry_max_attempts)
    except Exception as exc:  # noqa: BLE001 - the status column is advisory
        log.warning("project %s: could not write llm_status: %s", project_id, exc)
    if stored:
        # After ml.create, project.model_version is the backend's title, which no prediction carries; and
        # under "Uncertainty sampling" tasks without a prediction (failed calls) are served last, not blank
        # in id order.
        ls.projects.update(id=project_id, model_version=version, sampling="Uncertainty sampling")
    return stored, len(todo) - len(items), version


def setup_project(ls: LabelStudio, settings: Settings, title: str, labels_file: Path,
                  data_file: Path | None, limit: int | None, backend_url: str | None,
                  preannotate_n: int = 0) -> SetupReport:
    labels = load_labels_file(labels_file)
    label_config = build_label_config(labels)
    parse_label_config(label_config)  # fail here, not inside Label Studio
    project_id, created = ensure_project(ls, title, label_config)
    imported = skipped = 0
    if data_file is not None:
        imported, skipped = import_tasks(ls, project_id, list(read_task_texts(data_file, limit)))
    report = SetupReport(project_id, created, imported, skipped, None)
    if backend_url:
        report.ml_backend_id = connect_backend(ls, project_id, backend_url, settings)
        report.webhook_ids = ensure_webhook(ls, project_id, backend_url, settings)
    report.review_view_id = ensure_review_view(ls, project_id)
    if preannotate_n > 0:
        report.preannotated, report.not_annotated, report.model_version = preannotate(
            ls, project_id, settings, preannotate_n)
    return report
