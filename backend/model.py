"""The model class Label Studio talks to, in the `LabelStudioMLBase` shape: `setup`, `predict`, `fit`.

It is a thin adapter. The work is done by the project's services, all built from the composition root
(`backend.registry.Runtime`, a `backend.composition.Services`):
- `ProjectAnnotator`: LLM spans, recorded as the task's LLM label or as *not annotated* (backend.project_annotator);
- `DemoSync`: the k-NN demonstrations from human-verified tasks (backend.demo_sync);
- `FailedTaskRetrier`: failed LLM calls asked again in the background (backend.retrier);
- live serving with its lanes and score meanings (backend.serving); the published student (backend.student).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from backend.base import MLBase
from backend.demo_sync import DemoSync
from backend.labelstudio import LabelStudioError, connect, explain
from backend.llm_labels import DeferredLabelStore
from backend.project_annotator import ProjectAnnotator
from backend.retrier import FailedTaskRetrier, RetryPolicy, mark_status
from backend.serving import predict_with_llm, predict_with_student
from backend.student import StudentCache, StudentHandle

if TYPE_CHECKING:
    from backend.registry import Runtime

log = logging.getLogger(__name__)


class NERBackendModel(MLBase):
    """Serves pre-annotations for one project (the LLM's, or the student's once it wins a fair comparison)."""

    def __init__(self, project_id: int, label_config: str, runtime: Runtime, ls_url: str | None = None,
                 ls_token: str | None = None, confirmed: bool = True) -> None:
        """`confirmed=False` (web requests name any project id): nothing is written to disk for the project
        until Label Studio confirms it exists, or its state directory already does."""
        self.runtime = runtime
        self.ls_url, self.ls_token = ls_url, ls_token
        self._confirmed = confirmed
        self._closed = False
        super().__init__(project_id, label_config)

    def setup(self) -> None:
        rt, s, pid = self.runtime, self.runtime.settings, self.project_id
        self.schema = rt.schema(self.label_config)
        self.state = rt.state(pid)
        self.demos = rt.demo_index()
        self.llm_labels = DeferredLabelStore(lambda: rt.llm_labels(pid), self.confirmed)
        self.annotator = ProjectAnnotator(pid, self.schema, rt.annotator(self.schema, self.demos), self.llm_labels)
        self.students = StudentCache(rt.data_dir, pid)
        self.demo_sync = DemoSync(pid, self.schema, self.demos, self._ls, s.retrain_holdout_fraction,
                                  self.llm_labels.texts)
        self.retrier = FailedTaskRetrier(self.annotator, self.llm_labels, self._ls, lambda: self.model_version,
                                         RetryPolicy(s.llm_retry_max_attempts, s.llm_retry_base_delay_s))
        # /setup must answer within 3 s, so the project is confirmed and demos loaded in the background.
        threading.Thread(target=self.refresh_demos, name=f"demos-{pid}", daemon=True).start()

    @property
    def model_version(self) -> str:
        """The current round's version once a round ran, else the LLM's own.

        Read from the shared project state on every call, so a round started by the CLI or a worker reaches
        /setup (and every later prediction) without a restart.
        """
        return self.state.get("model_version") or self.annotator.llm_version

    # ------------------------------------------------------------ Label Studio and confirmation

    def _ls(self) -> Any:
        target = self.runtime.label_studio_target(self.ls_url, self.ls_token)
        if target is None:
            raise LabelStudioError("no Label Studio connection: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY "
                                   "(a /setup `hostname` is used only with its own `access_token`)")
        return connect(*target)

    def confirmed(self) -> bool:
        """Label Studio knows the project (or the CLI/worker, which read it from Label Studio, wrote state)."""
        if not self._confirmed and self.state.dir.is_dir():
            self._confirmed = True
        return self._confirmed

    def _confirm(self, ls: Any) -> None:
        if self.confirmed():
            return
        try:
            ls.projects.get(id=self.project_id)
        except Exception as exc:  # noqa: BLE001 - any failure leaves the project unconfirmed
            raise explain(exc, f"reading project {self.project_id}") from exc
        self._confirmed = True

    def refresh_demos(self) -> bool:
        """Confirm the project with Label Studio, then load its human-verified tasks as demonstrations."""
        return self.demo_sync.refresh(on_connected=self._confirm)

    def reconfirm(self, min_interval_s: float = 30.0) -> None:
        """Try again (in the background) to confirm the project and load its demos, after a failed try."""
        if self.confirmed() or self._closed or time.monotonic() - self.demo_sync.last_refresh < min_interval_s:
            return
        threading.Thread(target=self.refresh_demos, name=f"demos-{self.project_id}", daemon=True).start()

    def wait_demos(self, timeout: float) -> bool:
        """Wait for the first demo fetch (and project confirmation) to end, whatever its outcome."""
        return self.demo_sync.ready.wait(timeout)

    def flush_updates(self, timeout: float = 60.0) -> None:
        """Wait until the demo-index updates queued so far have run (tests, orderly shutdown)."""
        done = threading.Event()
        self.demo_sync.queue(done.set)
        done.wait(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------ protocol

    def predict(self, tasks: list[dict[str, Any]], context: dict[str, Any] | None = None,
                **kwargs: Any) -> list[list[dict[str, Any]]]:
        student = self.serving_student()
        if student is not None:
            return predict_with_student(self.annotator, tasks, student, self.model_version)
        s = self.runtime.settings
        # First use: give the background demo fetch a moment, so the first predictions get demos.
        self.demo_sync.ready.wait(timeout=min(20.0, s.predict_deadline_s / 4))
        return predict_with_llm(self.annotator, tasks, self.runtime.lanes, s.predict_deadline_s, self.model_version,
                                on_outcomes=self._write_status)

    def _write_status(self, tasks: list[dict[str, Any]], outcomes: list[Any]) -> None:
        """`llm_status` into the tasks' data, off the request thread (one PATCH per changed task)."""
        if not self.confirmed() or self._closed:
            return

        def write() -> None:
            try:
                mark_status(self._ls(), self.llm_labels, tasks, outcomes, self.retrier.policy.max_attempts)
            except Exception as exc:  # noqa: BLE001 - advisory: the prediction itself is what matters
                log.warning("project %s: could not write llm_status: %s", self.project_id, exc)

        self.demo_sync.queue(write)

    def serving_student(self) -> StudentHandle | None:
        """The student when the configured source says so (`auto`: once it beats the LLM on a fair comparison)."""
        source = self.runtime.settings.prediction_source
        state = self.state.read()
        if source == "llm" or not state.get("student_version"):
            return None
        if source == "auto":
            student_f1, llm_f1 = state.get("student_f1"), state.get("llm_f1")
            if student_f1 is None or llm_f1 is None or student_f1 <= llm_f1:
                return None
        return self.students.current(state["student_version"])

    def fit(self, event: str, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if event in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
            task, annotation = data.get("task"), data.get("annotation")
            if isinstance(task, dict) and isinstance(annotation, dict):
                return self.demo_sync.on_annotation(task, annotation)
            return {"status": "ignored: no task or annotation"}
        if event == "ANNOTATIONS_DELETED":
            return self.demo_sync.on_deleted(data.get("annotations") or [])
        return {"status": "recorded", "event": event}

    def close(self) -> None:
        """Release the threads; pending demo-index updates are dropped with the in-memory index."""
        self._closed = True
        self.demo_sync.close()
