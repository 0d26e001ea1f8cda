"""One project's LLM annotation service: annotate → ground → record → prediction.

Every caller that asks the LLM about a project's tasks (live `/predict`, an acquisition round,
`setup-project`'s first batch, the failed-task retrier) goes through here, so the rules hold everywhere:
- a success is recorded as the task's LLM label (the student's training data), even an empty one;
- a failure is recorded as *not annotated* with its reason and the ladder rung of its request, never as
  "no entities";
- a task whose last reply was cut off or malformed is asked with the next rung of the content-retry ladder
  (backend.annotator.retry_ladder), never with the request that just failed; after a transport failure
  (timeout, 429, 5xx) the same rung is asked again;
- a prediction carries grounded spans only, at the version and score the caller decides.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from backend.annotator.annotator import AnnotationOutcome, LLMAnnotator
from backend.annotator.retry_ladder import BASE, RequestVariant, variant_for
from backend.labeling_config import LabelSchema
from backend.llm_labels import LLMFailure, LLMLabelStore

log = logging.getLogger(__name__)

# Reasons that retrying cannot fix: the retrier leaves these tasks alone.
PERMANENT_FAILURES = frozenset({"no_text", "too_long"})


def failure_reason(outcome: AnnotationOutcome) -> str:
    """The reason word of a failed outcome (`timeout: no answer within 30 s` → `timeout`)."""
    return outcome.reason or "error"


def _task_id(task: Mapping[str, Any]) -> int | None:
    value = task.get("id")
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


class ProjectAnnotator:
    def __init__(self, project_id: int, schema: LabelSchema, annotator: LLMAnnotator,
                 llm_labels: LLMLabelStore) -> None:
        self.project_id = project_id
        self.schema = schema
        self.annotator = annotator
        self.llm_labels = llm_labels

    @property
    def llm_version(self) -> str:
        """The LLM's own version (`llm-<model>-<template>`): which LLM and prompt made a label."""
        return self.annotator.model_version

    def text_of(self, task: Mapping[str, Any]) -> str | None:
        text = (task.get("data") or {}).get(self.schema.value_key)
        return text if isinstance(text, str) else None

    def annotate_task(self, task: Mapping[str, Any]) -> AnnotationOutcome:
        pre = self._precheck(task)
        outcome = pre or self.annotator.annotate(self.text_of(task) or "",
                                                 self.variant_of(task, self._failure(task), self._answered(task)))
        self.record(task, outcome)
        return outcome

    def annotate_tasks(self, tasks: Sequence[Mapping[str, Any]], concurrency: int = 8,
                       progress: bool = False) -> list[AnnotationOutcome]:
        """Outcomes in task order; at most `concurrency` LLM calls in flight; every outcome recorded."""
        prechecked = [self._precheck(t) for t in tasks]
        todo = [i for i, pre in enumerate(prechecked) if pre is None]
        failures = self._failures() if todo else {}
        answered = self._answered_all() if todo else {}
        variants = [self.variant_of(tasks[i], failures.get(_task_id(tasks[i])), answered.get(_task_id(tasks[i])))
                    for i in todo]
        asked = self.annotator.annotate_many([self.text_of(tasks[i]) or "" for i in todo], concurrency=concurrency,
                                             progress=progress, variants=variants)
        outcomes: list[AnnotationOutcome] = [pre for pre in prechecked]  # type: ignore[misc]
        for i, outcome in zip(todo, asked, strict=True):
            outcomes[i] = outcome
        for task, outcome in zip(tasks, outcomes, strict=True):
            self.record(task, outcome)
        return outcomes

    def variant_of(self, task: Mapping[str, Any], failure: LLMFailure | None,
                   answered: tuple[str, int] | None = None) -> RequestVariant:
        """The request for the task's next LLM call: if its last call on this text failed, the rung
        `LLMFailure.next_rung` says; if the LLM last answered this text above the base request, that rung
        (`answered`: the task's (text, rung) from `LLMLabelStore.answered_rung(s)`; the base request had
        failed on it); else the base."""
        text = self.text_of(task) or ""
        if failure is not None:
            return variant_for(failure.next_rung(text))
        if answered is not None and answered[0] == text:
            return variant_for(answered[1])
        return BASE

    def _answered(self, task: Mapping[str, Any]) -> tuple[str, int] | None:
        task_id = _task_id(task)
        if task_id is None:
            return None
        try:
            return self.llm_labels.answered_rung(task_id)
        except Exception as exc:  # noqa: BLE001 - as in _failure: ask the base request
            log.warning("project %s: could not read the LLM label rung of task %s: %s", self.project_id, task_id,
                        exc)
            return None

    def _answered_all(self) -> dict[int, tuple[str, int]]:
        try:
            return self.llm_labels.answered_rungs()
        except Exception as exc:  # noqa: BLE001 - as in _failures
            log.warning("project %s: could not read the LLM labels' rungs: %s", self.project_id, exc)
            return {}

    def _failure(self, task: Mapping[str, Any]) -> LLMFailure | None:
        task_id = _task_id(task)
        if task_id is None:
            return None
        try:
            return self.llm_labels.failure(task_id)
        except Exception as exc:  # noqa: BLE001 - bookkeeping never fails a prediction: ask the base request
            log.warning("project %s: could not read the LLM failure of task %s: %s", self.project_id, task_id, exc)
            return None

    def _failures(self) -> dict[int, LLMFailure]:
        try:
            return self.llm_labels.failures()
        except Exception as exc:  # noqa: BLE001 - as in _failure
            log.warning("project %s: could not read the LLM failures: %s", self.project_id, exc)
            return {}

    def _precheck(self, task: Mapping[str, Any]) -> AnnotationOutcome | None:
        text = self.text_of(task)
        if text is None or not text.strip():
            return AnnotationOutcome(ok=False, error="no_text: the task has no text to annotate")
        return None  # the annotator itself refuses texts over MAX_TASK_CHARS ("too_long")

    def record(self, task: Mapping[str, Any], outcome: AnnotationOutcome) -> None:
        """Keep the LLM's answer per task; bookkeeping never fails a prediction."""
        if task.get("id") is None:
            return
        try:
            task_id, text = int(task["id"]), self.text_of(task) or ""
            if outcome.ok:
                self.llm_labels.put(task_id, text, outcome.spans, self.llm_version, outcome.variant.rung)
            else:
                self.llm_labels.record_failure(task_id, text, failure_reason(outcome), outcome.variant.rung)
        except Exception as exc:  # noqa: BLE001
            log.warning("project %s: could not record the LLM outcome of task %s: %s", self.project_id,
                        task.get("id"), exc)

    def to_prediction(self, task: Mapping[str, Any], spans: Sequence[Any], version: str,
                      score: float) -> dict[str, Any]:
        """A Label Studio prediction: grounded regions, at `version`, with the queue `score` the caller set."""
        text = self.text_of(task) or ""
        regions = [self.schema.to_region(span, text) for span in spans if span.label in self.schema.values]
        return {"task": task.get("id"), "result": regions, "score": round(min(1.0, max(0.0, score)), 6),
                "model_version": version}
