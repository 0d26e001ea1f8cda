"""Live `/predict`: LLM spans through two lanes under a deadline, or the student's spans.

Scores mean one thing each (docs/predictions.md):
- a prediction's `score` is its place in Label Studio's queue (lower = served sooner). A task predicted
  live was not picked by a round, so it gets `LIVE_SCORE`, after the round's head and the carried-over rest;
- a region's `score` is a confidence an annotator may read: the student's span probability. The LLM gives
  no calibrated confidence, so its regions carry none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from backend.annotator.annotator import AnnotationOutcome
from backend.metrics import REGISTRY
from backend.project_annotator import ProjectAnnotator
from backend.queue_publisher import LIVE_SCORE
from backend.settings import Settings
from backend.student import StudentHandle

log = logging.getLogger(__name__)


class LLMLanes:
    """Two bounded pools: one FIFO pool made a 1-task request (an annotator opening a task) wait 13.4 s
    behind a 1,000-task one (issue 12), so small requests get a lane of their own."""

    def __init__(self, settings: Settings) -> None:
        self.interactive_max_tasks = settings.interactive_max_tasks
        self.bulk = ThreadPoolExecutor(max_workers=max(1, settings.llm_concurrency), thread_name_prefix="llm")
        self.interactive = ThreadPoolExecutor(max_workers=max(1, settings.llm_interactive_concurrency),
                                              thread_name_prefix="llm-interactive")

    def lane(self, n_tasks: int) -> ThreadPoolExecutor:
        return self.interactive if n_tasks <= self.interactive_max_tasks else self.bulk


def not_annotated(task: dict[str, Any], reason: str) -> list[dict[str, Any]]:
    """No prediction: Label Studio stores nothing and asks again; never "no entities"."""
    REGISTRY.inc("llmaaa_predict_tasks_total", outcome="not_annotated")
    REGISTRY.inc("llmaaa_not_annotated_total", reason=reason)
    log.warning("task %s not annotated: %s", task.get("id"), reason)
    return []


def predict_with_llm(annotator: ProjectAnnotator, tasks: list[dict[str, Any]], lanes: LLMLanes,
                     deadline_s: float, version: str,
                     on_outcomes: Callable[[list[dict[str, Any]], list[AnnotationOutcome]], None] | None = None,
                     ) -> list[list[dict[str, Any]]]:
    """Predictions in task order; `on_outcomes(tasks, outcomes)` gets the ones that finished in time."""
    deadline = time.monotonic() + deadline_s
    pool = lanes.lane(len(tasks))
    futures: list[Future[AnnotationOutcome]] = [pool.submit(annotator.annotate_task, task) for task in tasks]
    results: list[list[dict[str, Any]]] = []
    finished: list[tuple[dict[str, Any], AnnotationOutcome]] = []
    for task, future in zip(tasks, futures, strict=True):
        try:
            outcome = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            # Still running: it finishes into the cache and the label store; the next /predict is instant.
            results.append(not_annotated(task, "deadline"))
            continue
        finished.append((task, outcome))
        if not outcome.ok:
            results.append(not_annotated(task, outcome.reason or "error"))
            continue
        REGISTRY.inc("llmaaa_predict_tasks_total", outcome="annotated")
        prediction = annotator.to_prediction(task, outcome.spans, version, LIVE_SCORE)
        prediction.pop("task", None)  # /predict answers in task order; Label Studio adds the task itself
        results.append([prediction])
    if on_outcomes is not None and finished:
        on_outcomes([t for t, _ in finished], [o for _, o in finished])
    return results


def predict_with_student(annotator: ProjectAnnotator, tasks: list[dict[str, Any]], student: StudentHandle,
                         version: str) -> list[list[dict[str, Any]]]:
    """Student spans, each region scored with the span's confidence (mean probability of its tags)."""
    texts = [annotator.text_of(t) for t in tasks]
    idx = [i for i, text in enumerate(texts) if text and text.strip()]
    spans = student.model.predict([texts[i] for i in idx]) if idx else []
    results: list[list[dict[str, Any]]] = [not_annotated(t, "no_text") if i not in set(idx) else []
                                           for i, t in enumerate(tasks)]
    for j, i in enumerate(idx):
        prediction = annotator.to_prediction(tasks[i], spans[j], version, LIVE_SCORE)
        prediction.pop("task", None)
        results[i] = [prediction]
        REGISTRY.inc("llmaaa_predict_tasks_total", outcome="student")
    return results
