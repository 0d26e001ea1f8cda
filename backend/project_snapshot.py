"""One read of a Label Studio project, shared by every stage of a retrain or an acquisition round.

Which tasks are human-verified, and which verified tasks each role may use:
- *evaluation*: a stable, id-based share of the verified tasks, held out from everything else (training,
  the meta set, early stopping and the LLM's demonstrations), so the LLM-vs-student comparison is fair;
- *meta*: the rest, which the reweighting aligns with, early stopping watches, and demonstrations come from;
- *dev*: when the student trains on verified tasks (the recipe's gold term, or RETRAIN_INCLUDE_VERIFIED), a
  seeded share of the rest taken out of *meta* for early stopping, so the student is stopped on verified
  tasks it did not train on (backend.retrain.meta_and_evaluation). Dev tasks are still demonstrations.

An empty annotation on a task the LLM never annotated successfully is *flagged*, not verified: the
annotator may have submitted a task that was served blank because the LLM call failed, and counting it
as "no entities" would poison the meta set.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from backend.labeling_config import LabelSchema
from backend.labelstudio import explain, iter_tasks, result_to_spans, submitted_annotation
from training.data import Example
from training.spans import Span

FLAG_EMPTY_UNANNOTATED = "empty annotation on a task the LLM never annotated: check it, then submit again"


def held_out(task_id: int, fraction: float) -> bool:
    """A stable, id-based split: the same task is always held out (or not) across retrains and processes."""
    return (zlib.crc32(str(task_id).encode()) % 1000) < fraction * 1000


@dataclass
class ProjectSnapshot:
    project_id: int
    schema: LabelSchema
    tasks: list[dict[str, Any]]
    verified: list[Example] = field(default_factory=list)
    unlabeled: list[dict[str, Any]] = field(default_factory=list)
    flagged: dict[int, str] = field(default_factory=dict)  # task id -> why it is not verified

    @property
    def annotated_ids(self) -> set[int]:
        return {int(ex.id) for ex in self.verified} | set(self.flagged)

    def text_of(self, task: Mapping[str, Any]) -> str | None:
        text = (task.get("data") or {}).get(self.schema.value_key)
        return text if isinstance(text, str) else None


@dataclass
class VerifiedSplit:
    meta: list[Example]
    evaluation: list[Example]
    dev: list[Example] = field(default_factory=list)  # empty: early stopping watches the meta set

    @property
    def demonstrations(self) -> list[Example]:
        """Every verified task outside the evaluation split: the LLM's demonstration pool."""
        return [*self.meta, *self.dev]


def read_project(ls: Any, project_id: int, schema_of: Any, llm_labels: Mapping[int, tuple[str, list[Span]]]
                 ) -> ProjectSnapshot:
    """Read the project and all its tasks once; `schema_of(label_config)` parses its labeling config."""
    try:
        project = ls.projects.get(id=project_id)
        tasks = list(iter_tasks(ls, project_id))
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, f"reading project {project_id}") from exc
    snapshot = ProjectSnapshot(project_id, schema_of(project.label_config), tasks)
    for task in tasks:
        classify_task(snapshot, task, llm_labels)
    return snapshot


def classify_task(snapshot: ProjectSnapshot, task: dict[str, Any],
                  llm_labels: Mapping[int, tuple[str, list[Span]]]) -> None:
    text = snapshot.text_of(task)
    if text is None:
        return
    tid = int(task["id"])
    annotation = submitted_annotation(task)
    if annotation is None:
        snapshot.unlabeled.append(task)
        return
    spans = result_to_spans(annotation.get("result") or [], snapshot.schema, text)
    llm_label = llm_labels.get(tid)
    if not spans and (llm_label is None or llm_label[0] != text):
        snapshot.flagged[tid] = FLAG_EMPTY_UNANNOTATED
        return
    snapshot.verified.append(Example(str(tid), text, spans))


def split_verified(verified: list[Example], holdout_fraction: float) -> VerifiedSplit:
    evaluation = [ex for ex in verified if held_out(int(ex.id), holdout_fraction)]
    held = {ex.id for ex in evaluation}
    return VerifiedSplit(meta=[ex for ex in verified if ex.id not in held], evaluation=evaluation)
