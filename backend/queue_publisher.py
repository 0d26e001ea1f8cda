"""The one bulk-prediction pipeline: LLM spans → validated predictions → Label Studio's queue.

Label Studio 1.23.2 shows a pre-label only from the project's *current* model version, and its
"Uncertainty sampling" queue serves only tasks holding a prediction at that version, lowest `score`
first (`../shared/docs/label-studio-integration.md` §6, §10; re-checked in docs/predictions.md). So every
publication of a version carries *every* unannotated task that has LLM spans, not only the round's batch:

    score 0 … < 0.5   the round's head, in acquisition order (labelled first)
    score 0.5 … < 1   every other task with LLM spans (still pre-labelled, after the head)
    no prediction     tasks whose LLM call failed or never ran: outside the queue until every pre-labelled
                      task is done (Label Studio then falls back to random order), and marked in their data

Steps, each checked: delete leftovers of this version (a crashed earlier attempt), validate and import in
bulk with the stored count checked, switch the project to the version, delete older round versions.
A failure before the switch leaves the previous version serving, untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from backend.labeling_config import LabelSchema
from backend.labelstudio import (
    LabelStudioError,
    delete_version,
    explain,
    import_predictions_checked,
    model_versions,
)
from training.spans import Span

log = logging.getLogger(__name__)

ROUND_PREFIX = "acq-r"
HEAD_SHARE = 0.5  # the head's scores fill [0, 0.5); the carried-over rest [0.5, 1)
LIVE_SCORE = 1.0  # a task predicted live, between rounds: after the head and the rest


@dataclass(frozen=True)
class QueueItem:
    """A task with LLM spans, in the order it should be labelled."""

    task_id: int
    text: str
    spans: Sequence[Span]


@dataclass
class PublishReport:
    version: str
    head: int
    carried_over: int
    uploaded: int
    stale_deleted: int


def round_version(round_no: int) -> str:
    return f"{ROUND_PREFIX}{round_no}"


def queue_scores(n_head: int, n_rest: int) -> tuple[list[float], list[float]]:
    """Unique, ascending, never null: head in [0, 0.5), rest in [0.5, 1)."""
    head = [round(HEAD_SHARE * i / max(1, n_head), 9) for i in range(n_head)]
    rest = [round(HEAD_SHARE + (1 - HEAD_SHARE) * i / max(1, n_rest), 9) for i in range(n_rest)]
    return head, rest


def build_predictions(schema: LabelSchema, head: Sequence[QueueItem], rest: Sequence[QueueItem],
                      version: str) -> list[dict[str, Any]]:
    head_scores, rest_scores = queue_scores(len(head), len(rest))
    predictions = []
    for item, score in [*zip(head, head_scores, strict=True), *zip(rest, rest_scores, strict=True)]:
        regions = [schema.to_region(span, item.text) for span in item.spans if span.label in schema.values]
        predictions.append({"task": item.task_id, "result": regions, "score": score, "model_version": version})
    return predictions


def publish_queue(ls: Any, project_id: int, schema: LabelSchema, version: str, head: Sequence[QueueItem],
                  rest: Sequence[QueueItem]) -> PublishReport:
    """Publish `version` with `head` first and `rest` after; every step checked (see the module doc)."""
    head_ids = {item.task_id for item in head}
    rest = [item for item in rest if item.task_id not in head_ids]
    predictions = build_predictions(schema, head, rest, version)
    if not predictions:
        raise LabelStudioError(f"project {project_id}: no task has LLM spans to queue; queue unchanged")
    try:
        delete_version(ls, project_id, version)  # leftovers of a crashed attempt: never two per task
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, f"clearing a half-published {version}") from exc
    texts = {item.task_id: item.text for item in [*head, *rest]}
    uploaded = import_predictions_checked(ls, project_id, schema, predictions, texts)
    try:
        ls.projects.update(id=project_id, sampling="Uncertainty sampling", model_version=version)
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, f"switching project {project_id} to {version}") from exc
    stale = 0
    for old in stale_versions(ls, project_id, version):
        stale += delete_version(ls, project_id, old)
    log.info("project %s: published %s, %d head + %d carried over, %d stale predictions deleted", project_id,
             version, len(head), len(rest), stale)
    return PublishReport(version, len(head), len(rest), uploaded, stale)


def add_to_current(ls: Any, project_id: int, schema: LabelSchema, version: str, items: Sequence[QueueItem],
                   score: float = LIVE_SCORE) -> int:
    """Add predictions at the current version without re-ranking (e.g. a task whose retry succeeded)."""
    predictions = [{"task": item.task_id, "score": score, "model_version": version,
                    "result": [schema.to_region(s, item.text) for s in item.spans if s.label in schema.values]}
                   for item in items]
    return import_predictions_checked(ls, project_id, schema, predictions, {i.task_id: i.text for i in items})


def stale_versions(ls: Any, project_id: int, keep_version: str) -> list[str]:
    """Our older round versions (never another tool's predictions)."""
    return [v for v in model_versions(ls, project_id) if v.startswith(ROUND_PREFIX) and v != keep_version]


def current_label(labels: Mapping[int, tuple[str, list[Span]]], task: Mapping[str, Any],
                  value_key: str) -> list[Span] | None:
    """The task's recorded LLM spans if they were made on its current text, else None (never asked, or the
    text changed since)."""
    label = labels.get(int(task["id"]))
    return label[1] if label is not None and label[0] == (task.get("data") or {}).get(value_key) else None


def unannotated_with_labels(tasks: Sequence[Mapping[str, Any]], labels: Mapping[int, tuple[str, list[Span]]],
                            value_key: str, annotated: set[int]) -> list[QueueItem]:
    """Every unannotated task whose recorded LLM label was made on its current text, by task id."""
    items = []
    for task in tasks:
        spans = current_label(labels, task, value_key)
        if int(task["id"]) in annotated or spans is None:
            continue
        items.append(QueueItem(int(task["id"]), task["data"][value_key], spans))
    return sorted(items, key=lambda item: item.task_id)
