"""Keeps a project's k-NN demonstration index in step with its human-verified tasks.

Loaded from Label Studio in the background (Label Studio wants `/setup` answered within 3 s), then kept
current from webhook events on one worker thread (embedding text must never run inside a webhook request).
Tasks of the evaluation split and flagged empty submissions never become demonstrations: the first keeps
the LLM-vs-student comparison fair, the second keeps "served blank after a failure" out of the prompt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from backend.annotator.demos import DemoIndex
from backend.labeling_config import LabelSchema
from backend.labelstudio import LabelStudioError, iter_tasks, result_to_spans, submitted_annotation, task_dict
from backend.project_snapshot import held_out

log = logging.getLogger(__name__)


class DemoSync:
    def __init__(self, project_id: int, schema: LabelSchema, index: DemoIndex, ls: Callable[[], Any],
                 holdout_fraction: float, llm_label_texts: Callable[[], Mapping[int, str]]) -> None:
        """`llm_label_texts()`: task id -> the text the LLM labelled, the whole table in one read."""
        self.project_id = project_id
        self.schema = schema
        self.index = index
        self.ls = ls
        self.holdout_fraction = holdout_fraction
        self.llm_label_texts = llm_label_texts
        self.ready = threading.Event()
        self.last_refresh = 0.0
        self._refresh_lock = threading.Lock()
        self._updates = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"demos-{project_id}")
        self._annotation_task: dict[int, int] = {}  # annotation id -> task id, for deletions

    def start(self) -> None:
        threading.Thread(target=self.refresh, name=f"demos-{self.project_id}", daemon=True).start()

    def refresh(self, on_connected: Callable[[Any], None] | None = None) -> bool:
        """Load every verified task; False (and demos stay as they are) when Label Studio is unreachable."""
        if not self._refresh_lock.acquire(blocking=False):
            return False  # a refresh is already running
        try:
            self.last_refresh = time.monotonic()
            client = self.ls()
            if on_connected is not None:
                on_connected(client)
            tasks = list(iter_tasks(client, self.project_id))
        except Exception as exc:  # noqa: BLE001 - LS down must not stop annotation
            log.warning("project %s: no demonstrations, Label Studio unavailable (%s); annotating without demos",
                        self.project_id, exc if isinstance(exc, LabelStudioError) else type(exc).__name__)
            return False
        finally:
            self.ready.set()
            self._refresh_lock.release()
        llm_texts = self.llm_label_texts()  # once per refresh, not once per task: O(tasks + labels)
        demos = [d for d in (self.demo_of(t, submitted_annotation(t), llm_texts) for t in tasks) if d is not None]
        self.index.upsert_many(demos)  # one embedding batch, not one per task
        log.info("project %s: %d verified tasks in the demo index", self.project_id, len(self.index))
        return True

    def demo_of(self, task: Mapping[str, Any], annotation: Mapping[str, Any] | None,
                llm_texts: Mapping[int, str] | None = None) -> tuple[str, str, list[Any]] | None:
        """(id, text, spans) when the task may serve as a demonstration, else None.

        `llm_texts`: what `llm_label_texts()` returned, when the caller read it already (a refresh); else
        it is read here, and only for an empty submission, the one case that needs it."""
        text = (task.get("data") or {}).get(self.schema.value_key)
        if not isinstance(text, str) or task.get("id") is None or annotation is None:
            return None
        tid = int(task["id"])
        if annotation.get("id") is not None:
            self._annotation_task[int(annotation["id"])] = tid
        spans = result_to_spans(annotation.get("result") or [], self.schema, text)
        if annotation.get("was_cancelled") or held_out(tid, self.holdout_fraction):
            return None
        if not spans and (self.llm_label_texts() if llm_texts is None else llm_texts).get(tid) != text:
            return None  # empty submission on a task the LLM never annotated: flagged, not a demo
        return str(tid), text, spans

    def apply(self, task: Mapping[str, Any], annotation: Mapping[str, Any] | None) -> None:
        """Upsert or remove one task's demonstration from its newest submitted annotation."""
        demo = self.demo_of(task, annotation)
        if demo is not None:
            self.index.upsert(*demo)
        elif task.get("id") is not None:
            self.index.remove(str(task["id"]))

    def queue(self, fn: Callable[..., None], *args: Any) -> dict[str, Any]:
        try:
            self._updates.submit(fn, *args)
        except RuntimeError:  # closed (evicted from the registry): its next instance reloads from Label Studio
            return {"status": "skipped: project model was evicted"}
        return {"status": "demo index update queued"}

    def on_annotation(self, task: dict[str, Any], annotation: dict[str, Any]) -> dict[str, Any]:
        return self.queue(self.apply, task, annotation)

    def on_deleted(self, annotations: list[dict[str, Any]]) -> dict[str, Any]:
        return self.queue(self._forget, annotations)

    def _forget(self, annotations: list[dict[str, Any]]) -> None:
        """The payload has annotation ids only: re-read each affected task to see if it is still verified."""
        for ann in annotations:
            task_id = self._annotation_task.pop(int(ann.get("id", -1)), None)
            if task_id is None:
                continue
            try:
                task = task_dict(self.ls().tasks.get(id=task_id))
                self.apply(task, submitted_annotation(task))
            except Exception:  # noqa: BLE001 - unknown state: a demo must be verified, so drop it
                self.index.remove(str(task_id))

    def close(self) -> None:
        self._updates.shutdown(wait=False, cancel_futures=True)
