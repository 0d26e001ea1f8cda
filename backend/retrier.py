"""Tasks whose LLM call failed are asked again in the background until annotated, and marked meanwhile.

A failure (timeout, rate limit, 5xx, malformed or cut-off reply) leaves the task *not annotated*: it has no
prediction at the current version, so Label Studio's queue serves it after every pre-labelled task, and its
data carries `llm_status` (a Data Manager column, also shown above the text by configs that include it)
saying why. The retrier re-asks at most `max_attempts` times, with exponential backoff after transport
failures and at the base delay after content failures (the request changes); reasons no retry
can fix (`no_text`, `too_long`) are left alone. A success is published at the project's current version
after the round's head, and `llm_status` says what the LLM found.

What a re-ask sends is not decided here: `ProjectAnnotator` picks the request from the task's failure record
(after a cut-off or malformed reply, the next rung of `backend.annotator.retry_ladder`; after a transport
failure, the same request), and `llm_status` names the attempt and the request that failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from backend.annotator.annotator import AnnotationOutcome
from backend.annotator.retry_ladder import CONTENT_FAILURES
from backend.labeling_config import STATUS_KEY
from backend.labelstudio import patch_task_data
from backend.llm_labels import LLMFailure, LLMLabelStore
from backend.project_annotator import PERMANENT_FAILURES, ProjectAnnotator
from backend.queue_publisher import QueueItem, add_to_current

log = logging.getLogger(__name__)


def status_text(ok: bool, n_spans: int = 0, reason: str = "", attempts: int = 0, max_attempts: int = 0,
                request: str = "") -> str:
    """What the annotator reads: the LLM found nothing, found N entities, or failed (and what happens next).

    A failure names the attempt and the request that failed (`request`, e.g. "rung 1, fewer demos: 2 demos,
    greedy") and whether the next attempt changes the request (content failures) or repeats it (transport)."""
    if ok:
        return "LLM: no entities found" if n_spans == 0 else f"LLM: {n_spans} entities pre-labelled"
    if reason in PERMANENT_FAILURES:
        return f"LLM failed: {reason} (not retried; label by hand)"
    sent = f"; {request}" if request else ""
    if attempts >= max_attempts:
        return f"LLM failed: {reason} ({attempts} attempts, given up{sent}; label by hand)"
    then = "retrying with a changed request" if reason in CONTENT_FAILURES else "retrying the same request"
    return f"LLM failed: {reason} (attempt {attempts} of {max_attempts}{sent}; {then})"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay_s: float = 30.0
    max_delay_s: float = 1800.0

    def delay(self, attempts: int, reason: str = "") -> float:
        """Backoff doubles for transport failures (the same request waits for the server to recover). After a
        content failure the next request is a different rung of the ladder, so waiting longer buys nothing:
        it goes at the base delay."""
        doublings = 0 if reason in CONTENT_FAILURES else max(0, attempts - 1)
        return min(self.max_delay_s, self.base_delay_s * 2 ** doublings)

    def due(self, failure: LLMFailure, now: float) -> bool:
        return (failure.reason not in PERMANENT_FAILURES and failure.attempts < self.max_attempts
                and failure.ts + self.delay(failure.attempts, failure.reason) <= now)


@dataclass
class RetryReport:
    retried: int = 0
    annotated: int = 0
    still_failing: int = 0
    skipped: int = 0


class FailedTaskRetrier:
    def __init__(self, annotator: ProjectAnnotator, labels: LLMLabelStore, ls: Callable[[], Any],
                 current_version: Callable[[], str], policy: RetryPolicy | None = None) -> None:
        self.annotator = annotator
        self.labels = labels
        self.ls = ls
        self.current_version = current_version
        self.policy = policy or RetryPolicy()

    def run_once(self, now: float | None = None) -> RetryReport:
        now = time.time() if now is None else now
        due = [f for f in self.labels.failures().values() if self.policy.due(f, now)]
        report = RetryReport()
        if not due:
            return report
        client = self.ls()
        tasks = [self._live_task(client, f) for f in due]
        todo = [t for t in tasks if t is not None]
        report.skipped = len(due) - len(todo)
        outcomes = self.annotator.annotate_tasks(todo, concurrency=4)
        report.retried = len(todo)
        done = [QueueItem(int(t["id"]), self.annotator.text_of(t) or "", o.spans)
                for t, o in zip(todo, outcomes, strict=True) if o.ok]
        if done:
            add_to_current(client, self.annotator.project_id, self.annotator.schema, self.current_version(), done)
        report.annotated, report.still_failing = len(done), len(todo) - len(done)
        self.mark(client, todo, outcomes)
        return report

    def _live_task(self, client: Any, failure: LLMFailure) -> dict[str, Any] | None:
        """The task as it is now; None (and the failure forgotten) if it was annotated, changed or deleted."""
        try:
            task = client.tasks.get(id=failure.task_id)
        except Exception:  # noqa: BLE001 - deleted, or Label Studio is down: try again next time
            return None
        task = task if isinstance(task, dict) else task.dict()
        if task.get("annotations") or self.annotator.text_of(task) != failure.text:
            self.labels.forget_failure(failure.task_id)
            return None
        return task

    def mark(self, client: Any, tasks: list[Mapping[str, Any]], outcomes: Sequence[AnnotationOutcome]) -> int:
        return mark_status(client, self.labels, tasks, outcomes, self.policy.max_attempts)


def mark_status(client: Any, labels: LLMLabelStore, tasks: Sequence[Mapping[str, Any]],
                outcomes: Sequence[AnnotationOutcome], max_attempts: int) -> int:
    """Write `llm_status` into each task's data where it changed (parallel PATCHes)."""
    failures = labels.failures()
    updates = {}
    for task, outcome in zip(tasks, outcomes, strict=True):
        failure = failures.get(int(task["id"]))
        text = status_text(outcome.ok, len(outcome.spans), failure.reason if failure else "",
                           failure.attempts if failure else 0, max_attempts, outcome.request)
        data = dict(task.get("data") or {})
        if data.get(STATUS_KEY) != text:
            updates[int(task["id"])] = {**data, STATUS_KEY: text}
    return patch_task_data(client, updates)


class RetrierThread:
    """One daemon thread for the process: every `interval_s`, each project's retrier runs once."""

    def __init__(self, retriers: Callable[[], list[FailedTaskRetrier]], interval_s: float = 30.0) -> None:
        self.retriers = retriers
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="llm-retrier", daemon=True)

    def start(self) -> RetrierThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            for retrier in self.retriers():
                try:
                    report = retrier.run_once()
                    if report.retried:
                        log.info("project %s: retried %d failed tasks, %d annotated", retrier.annotator.project_id,
                                 report.retried, report.annotated)
                except Exception as exc:  # noqa: BLE001 - a down Label Studio or LLM: next tick tries again
                    log.warning("project %s: retrying failed tasks: %s", retrier.annotator.project_id, exc)
