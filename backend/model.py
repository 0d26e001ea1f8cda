"""The NER model class that Label Studio talks to: LLM pre-annotations grounded in the task text."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from functools import cached_property
from typing import Any

from backend.annotator.annotator import AnnotationOutcome, ChatClient, LLMAnnotator
from backend.annotator.cache import ReplyCache
from backend.annotator.client import LLMClient
from backend.annotator.demos import DemoIndex
from backend.annotator.ledger import CostLedger
from backend.annotator.prompt import PromptTemplate
from backend.base import MLBase
from backend.labeling_config import LabelSchema, parse_label_config
from backend.labelstudio import (
    LabelStudioError,
    connect,
    explain,
    fetch_verified,
    result_to_spans,
    submitted_annotation,
)
from backend.llm_labels import LLMLabelStore
from backend.metrics import REGISTRY
from backend.settings import Settings, get_settings
from backend.state import ProjectState
from backend.student import StudentCache, StudentHandle

log = logging.getLogger(__name__)


class Runtime:
    """Process-wide resources shared by every project: the LLM client, cache, ledger, embedder."""

    def __init__(self, settings: Settings, client: ChatClient | None = None, embedder: Any = None) -> None:
        """`client` and `embedder` replace the configured LLM and MiniLM (tests, simulations)."""
        self.settings = settings
        data_dir = settings.llmaaa_data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.client: ChatClient = client or LLMClient(
            base_url=settings.openai_base_url,
            api_key=settings.llm_api_key(),
            model=settings.llm_model,
            timeout=settings.llm_timeout_s,
            max_retries=settings.llm_max_retries,
        )
        self.cache = ReplyCache(data_dir / "llm-cache")
        self.ledger = CostLedger(data_dir / "costs.jsonl", prices_file=settings.llm_prices_file)
        self.template = PromptTemplate.load("ner", "v1")
        # Bounded: the only places LLM calls for /predict run. Two lanes, because one FIFO pool made a
        # 1-task request (an annotator opening a task) wait 13.4 s behind a 1,000-task one (issue 12).
        self.bulk_pool = ThreadPoolExecutor(max_workers=max(1, settings.llm_concurrency), thread_name_prefix="llm")
        self.interactive_pool = ThreadPoolExecutor(max_workers=max(1, settings.llm_interactive_concurrency),
                                                   thread_name_prefix="llm-interactive")
        self._embedder_lock = threading.Lock()
        self._embedder: Any = embedder
        REGISTRY.add_collector(self._collect_costs)

    def lane(self, n_tasks: int) -> ThreadPoolExecutor:
        """The interactive lane for small requests, the bulk lane for the rest."""
        return self.interactive_pool if n_tasks <= self.settings.interactive_max_tasks else self.bulk_pool

    def embedder(self) -> Any:
        with self._embedder_lock:
            if self._embedder is None:
                from training.embedder import SentenceEmbedder  # heavy: loaded on first need

                self._embedder = SentenceEmbedder()
            return self._embedder

    def _collect_costs(self, registry: Any) -> None:
        for model, row in self.ledger.summary().items():
            registry.set("llmaaa_llm_calls_total", row["calls"] - row["cached_calls"], model=model, cached="false")
            registry.set("llmaaa_llm_calls_total", row["cached_calls"], model=model, cached="true")
            registry.set("llmaaa_llm_tokens_total", row["prompt_tokens"], model=model, kind="prompt")
            registry.set("llmaaa_llm_tokens_total", row["completion_tokens"], model=model, kind="completion")
            registry.set("llmaaa_llm_cost_usd_total", row["usd"], model=model)


def label_studio_target(settings: Settings, request_url: str | None,
                        request_token: str | None) -> tuple[str, str] | None:
    """Where the backend may call Label Studio for a project, and with which key; None: nowhere.

    LABEL_STUDIO_API_KEY only ever goes to LABEL_STUDIO_URL. A `hostname` from a /setup request is used
    only together with that request's own `access_token`: otherwise anyone who can reach /setup could
    name a host and receive the configured key (issue 12). A configured URL always wins over a request's.
    """
    env_key = settings.label_studio_api_key.get_secret_value() if settings.label_studio_api_key else None
    if settings.label_studio_url:
        key = env_key or request_token
        return (settings.label_studio_url, key) if key else None
    if request_url and request_token:
        return request_url, request_token
    return None


# LLM labels of a project Label Studio has not confirmed yet wait in memory, this many at most.
PENDING_LABELS_MAX = 256


class NERBackendModel(MLBase):
    """Serves LLM pre-annotations for one project; learns demonstrations from verified tasks."""

    runtime: Runtime
    ls_url: str | None
    ls_token: str | None

    def __init__(self, project_id: int, label_config: str, runtime: Runtime,
                 ls_url: str | None = None, ls_token: str | None = None, confirmed: bool = True) -> None:
        """`confirmed=False` (web requests name any project id): nothing is written to disk for the project
        until Label Studio confirms it exists, or its state directory already does."""
        self.runtime = runtime
        self.ls_url = ls_url
        self.ls_token = ls_token
        self._confirmed = confirmed
        super().__init__(project_id, label_config)

    def setup(self) -> None:
        s = self.runtime.settings
        self.schema: LabelSchema = parse_label_config(self.label_config, labels_file=s.labels_file)
        self.demos = DemoIndex(_LazyEmbedder(self.runtime), k=s.knn_k)
        self.annotator = LLMAnnotator(
            client=self.runtime.client, schema=self.schema, template=self.runtime.template,
            cache=self.runtime.cache, ledger=self.runtime.ledger, demo_index=self.demos,
            k=s.knn_k, domain=s.ner_domain,
        )
        self.state = ProjectState(s.llmaaa_data_dir, self.project_id)
        self._llm_labels: LLMLabelStore | None = None  # opened on the first write (it creates the directory)
        self._pending_labels: list[tuple[int, str, list[Any], str]] = []
        self._labels_lock = threading.Lock()
        self.students = StudentCache(s.llmaaa_data_dir, self.project_id)
        # Demo-index updates embed text (and load MiniLM the first time): never inside a webhook request.
        self._index_updates = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"index-{self.project_id}")
        self._annotation_task: dict[int, int] = {}  # annotation id -> task id, for deletions
        self._demos_ready = threading.Event()
        self._demo_lock = threading.Lock()
        self._last_demo_fetch = 0.0
        self._closed = False
        # /setup must answer within 3 s, so the verified tasks are fetched in the background.
        threading.Thread(target=self.refresh_demos, name=f"demos-{self.project_id}", daemon=True).start()

    @property
    def model_version(self) -> str:
        """The current acquisition round's version once `llmaaa acquire` ran, else the LLM's own.

        Read from the shared project state on every call, so a round started by the CLI or a worker
        reaches /setup (and every later prediction) without a restart.
        """
        return self.state.get("model_version") or self.annotator.model_version

    # ------------------------------------------------------------ demonstrations

    def _ls(self) -> Any:
        target = label_studio_target(self.runtime.settings, self.ls_url, self.ls_token)
        if target is None:
            raise LabelStudioError("no Label Studio connection: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY "
                                   "(a /setup `hostname` is used only with its own `access_token`)")
        return connect(*target)

    @property
    def llm_labels(self) -> LLMLabelStore:
        with self._labels_lock:
            if self._llm_labels is None:
                self._llm_labels = LLMLabelStore(self.runtime.settings.llmaaa_data_dir, self.project_id)
            return self._llm_labels

    def confirmed(self) -> bool:
        """Label Studio knows the project (or the CLI/worker, which read it from Label Studio, wrote state)."""
        if not self._confirmed and self.state.dir.is_dir():
            self._confirmed = True
        return self._confirmed

    def _confirm(self, ls: Any) -> None:
        try:
            ls.projects.get(id=self.project_id)
        except Exception as exc:  # noqa: BLE001 - any failure leaves the project unconfirmed
            raise explain(exc, f"reading project {self.project_id}") from exc
        with self._labels_lock:  # with record_llm_label's check: no label is left behind in the list
            self._confirmed = True
            pending, self._pending_labels = self._pending_labels, []
        for item in pending:
            self._put_label(*item)

    def reconfirm(self, min_interval_s: float = 30.0) -> None:
        """Try again (in the background) to confirm the project and load its demos, after a failed try."""
        if self.confirmed() or self._closed or time.monotonic() - self._last_demo_fetch < min_interval_s:
            return
        if self._demo_lock.locked():
            return
        threading.Thread(target=self.refresh_demos, name=f"demos-{self.project_id}", daemon=True).start()

    def wait_demos(self, timeout: float) -> bool:
        """Wait for the first demo fetch (and project confirmation) to end, whatever its outcome."""
        return self._demos_ready.wait(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    def refresh_demos(self) -> bool:
        """Confirm the project with Label Studio, then load every human-verified task into the k-NN demo index."""
        with self._demo_lock:
            self._last_demo_fetch = time.monotonic()
            try:
                ls = self._ls()
                if not self.confirmed():
                    self._confirm(ls)
                verified = fetch_verified(ls, self.project_id, self.schema)
            except Exception as exc:  # noqa: BLE001 - LS down must not stop annotation
                log.warning("project %s: no demonstrations, Label Studio unavailable (%s); annotating "
                            "without demos", self.project_id, exc if isinstance(exc, LabelStudioError)
                            else type(exc).__name__)
                self._demos_ready.set()
                return False
            for task in verified:
                self.demos.upsert(str(task.task_id), task.text, task.spans)
            log.info("project %s: %d verified tasks in the demo index", self.project_id, len(verified))
            self._demos_ready.set()
            return True

    def _upsert_from_task(self, task: dict[str, Any], annotation: dict[str, Any] | None) -> None:
        text = (task.get("data") or {}).get(self.schema.value_key)
        if not isinstance(text, str):
            return
        if annotation is None or annotation.get("was_cancelled"):
            self.demos.remove(str(task["id"]))
            return
        spans = result_to_spans(annotation.get("result") or [], self.schema, text)
        self.demos.upsert(str(task["id"]), text, spans)
        if annotation.get("id") is not None:
            self._annotation_task[int(annotation["id"])] = int(task["id"])

    def _queue_index_update(self, fn: Callable[..., None], *args: Any) -> dict[str, Any]:
        try:
            self._index_updates.submit(fn, *args)
        except RuntimeError:  # evicted from the registry meanwhile: its next instance reloads demos from LS
            return {"status": "skipped: project model was evicted"}
        return {"status": "demo index update queued"}

    # ------------------------------------------------------------ protocol

    def predict(self, tasks: list[dict[str, Any]], context: dict[str, Any] | None = None,
                **kwargs: Any) -> list[list[dict[str, Any]]]:
        s = self.runtime.settings
        student = self.serving_student()
        if student is not None:
            return self.predict_with_student(tasks, student)
        deadline = time.monotonic() + s.predict_deadline_s
        # First use: give the background demo fetch a moment, so the first predictions get demos.
        self._demos_ready.wait(timeout=min(20.0, s.predict_deadline_s / 4))
        futures: list[Future[AnnotationOutcome] | None] = []
        pool = self.runtime.lane(len(tasks))
        for task in tasks:
            text = (task.get("data") or {}).get(self.schema.value_key)
            if not isinstance(text, str) or not text.strip():
                futures.append(None)
                continue
            futures.append(pool.submit(self.annotator.annotate, text))
        results: list[list[dict[str, Any]]] = []
        for task, future in zip(tasks, futures, strict=True):
            if future is None:
                self._not_annotated(task, "no_text")
                results.append([])
                continue
            try:
                outcome = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                # Still running: it finishes into the cache and the next /predict is instant.
                self._not_annotated(task, "deadline")
                results.append([])
                continue
            if not outcome.ok:
                self._not_annotated(task, _reason(outcome.error))
                results.append([])
                continue
            REGISTRY.inc("llmaaa_predict_tasks_total", outcome="annotated")
            self.record_llm_label(task, outcome)
            results.append([self.to_prediction(task, outcome)])
        return results

    def serving_student(self) -> StudentHandle | None:
        """The student when the configured source says so (`auto`: once it beats the LLM's held-out F1)."""
        source = self.runtime.settings.prediction_source
        state = self.state.read()
        if source == "llm" or not state.get("student_version"):
            return None
        if source == "auto":
            student_f1, llm_f1 = state.get("student_f1"), state.get("llm_f1")
            if student_f1 is None or llm_f1 is None or student_f1 <= llm_f1:
                return None
        return self.students.current(state["student_version"])

    def predict_with_student(self, tasks: list[dict[str, Any]], student: StudentHandle) -> list[list[dict[str, Any]]]:
        """Student spans: region score = the span's confidence (mean probability of its chosen tags);
        task score = mean over words of the top tag probability (1 − least confidence)."""
        key = self.schema.value_key
        idx = [i for i, t in enumerate(tasks) if isinstance((t.get("data") or {}).get(key), str)]
        texts = [tasks[i]["data"][key] for i in idx]
        spans, pooled = student.model.predict_and_pool(texts) if texts else ([], None)
        results: list[list[dict[str, Any]]] = [[] for _ in tasks]
        version = self.model_version
        for j, i in enumerate(idx):
            marg = pooled.marginals[j] if pooled is not None else None
            confidence = float(marg.max(axis=1).mean()) if marg is not None and len(marg) else 1.0
            regions = [self.schema.to_region(span, texts[j]) for span in spans[j]
                       if span.label in self.schema.values]
            score = 1.0 if version != self.annotator.model_version and version.startswith("acq-") else confidence
            results[i] = [{"result": regions, "score": round(min(1.0, max(0.0, score)), 6), "model_version": version}]
            REGISTRY.inc("llmaaa_predict_tasks_total", outcome="student")
        for i, task in enumerate(tasks):
            if i not in set(idx):
                self._not_annotated(task, "no_text")
        return results

    def record_llm_label(self, task: dict[str, Any], outcome: AnnotationOutcome) -> None:
        """Keep the LLM's spans as training data for the student (see backend.llm_labels)."""
        if task.get("id") is None:
            return
        item = (int(task["id"]), task["data"][self.schema.value_key], list(outcome.spans),
                self.annotator.model_version)
        self.confirmed()  # a state directory written meanwhile by the CLI or a worker confirms it too
        with self._labels_lock:
            confirmed = self._confirmed
            if not confirmed and len(self._pending_labels) < PENDING_LABELS_MAX:
                self._pending_labels.append(item)  # until Label Studio confirms the project: see _confirm
                return
        if not confirmed:
            log.warning("project %s is not confirmed by Label Studio: LLM label of task %s not recorded",
                        self.project_id, task.get("id"))
            return
        self._put_label(*item)

    def _put_label(self, task_id: int, text: str, spans: list[Any], version: str) -> None:
        try:
            self.llm_labels.put(task_id, text, spans, version)
        except Exception as exc:  # noqa: BLE001 - never fail a prediction over bookkeeping
            log.warning("could not record the LLM label of task %s: %s", task_id, exc)

    def _not_annotated(self, task: dict[str, Any], reason: str) -> None:
        # Never "no entities": LS stores nothing, and asks again next time.
        REGISTRY.inc("llmaaa_predict_tasks_total", outcome="not_annotated")
        REGISTRY.inc("llmaaa_not_annotated_total", reason=reason)
        log.warning("task %s not annotated: %s", task.get("id"), reason)

    def to_prediction(self, task: dict[str, Any], outcome: AnnotationOutcome) -> dict[str, Any]:
        text = task["data"][self.schema.value_key]
        regions = [self.schema.to_region(span, text) for span in outcome.spans]
        version = self.model_version
        # Under an acquisition round the score is a queue rank: a task predicted live was not selected,
        # so it goes after every selected one.
        score = 1.0 if version != self.annotator.model_version else task_score(outcome)
        return {"result": regions, "score": score, "model_version": version}

    def fit(self, event: str, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if event in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
            task, annotation = data.get("task"), data.get("annotation")
            if isinstance(task, dict) and isinstance(annotation, dict):
                return self._queue_index_update(self._upsert_from_task, task, annotation)
            return {"status": "ignored: no task or annotation"}
        if event == "ANNOTATIONS_DELETED":
            return self._queue_index_update(self._forget_annotations, data.get("annotations") or [])
        return {"status": "recorded", "event": event}

    def close(self) -> None:
        """Release the threads; pending demo-index updates are dropped with the in-memory index."""
        self._closed = True
        self._index_updates.shutdown(wait=False, cancel_futures=True)

    def _forget_annotations(self, annotations: list[dict[str, Any]]) -> None:
        """The payload has annotation ids only: re-read each affected task to see if it is still verified."""
        for ann in annotations:
            task_id = self._annotation_task.pop(int(ann.get("id", -1)), None)
            if task_id is None:
                continue
            try:
                task = self._ls().tasks.get(id=task_id)
                task_d = task if isinstance(task, dict) else task.dict()
                self._upsert_from_task(task_d, submitted_annotation(task_d))  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001
                self.demos.remove(str(task_id))  # unknown state: a demo must be verified, so drop it


class _LazyEmbedder:
    """Defers loading MiniLM until the first demo is embedded (keeps /setup fast)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @cached_property
    def _inner(self) -> Any:
        return self.runtime.embedder()

    def embed(self, texts: list[str]) -> Any:
        return self._inner.embed(texts)


def task_score(outcome: AnnotationOutcome) -> float:
    """Task-level score of an LLM prediction: the share of the LLM's mentions that were grounded.

    1.0 means every mention the LLM returned was found verbatim in the text with a known label; lower
    values flag replies with invented spans or labels, which deserve a closer look. An empty, clean
    answer scores 1.0. (The LLM gives no calibrated confidence, so none is pretended.)
    """
    kept, dropped = len(outcome.spans), len(outcome.dropped)
    return 1.0 if kept + dropped == 0 else round(kept / (kept + dropped), 4)


def _reason(error: str | None) -> str:
    text = (error or "error").split(":", 1)[0].strip().lower().replace(" ", "_")
    return text[:40] or "error"


class ModelRegistry:
    """One model per (project, label config), built on first use; at most MAX_PROJECTS are kept in memory.

    The least recently used model is evicted (its threads released) when a new project comes in: any
    client may name any project id, so an unbounded dict grew by 65 MB per 500 ids (issue 12). An evicted
    project's state stays on disk; its next request rebuilds the model and reloads demos from Label Studio.
    """

    def __init__(self, settings: Settings | None = None, runtime: Runtime | None = None) -> None:
        self.settings = settings or get_settings()
        self._runtime = runtime
        self._models: OrderedDict[int, NERBackendModel] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = Runtime(self.settings)
        return self._runtime

    def get(self, project_id: int, label_config: str | None = None, ls_url: str | None = None,
            ls_token: str | None = None) -> NERBackendModel:
        with self._lock:
            model = self._models.get(project_id)
            if model is not None and (label_config is None or model.label_config == label_config):
                self._models.move_to_end(project_id)
                if ls_url and ls_token:
                    model.ls_url, model.ls_token = ls_url, ls_token
                return model
            if label_config is None:
                raise KeyError(f"project {project_id} has no label config yet: Label Studio calls /setup first")
            fresh = NERBackendModel(project_id, label_config, self.runtime, ls_url, ls_token, confirmed=False)
            if model is not None:
                model.close()
            self._models[project_id] = fresh
            self._models.move_to_end(project_id)
            while len(self._models) > max(1, self.settings.max_projects):
                _, evicted = self._models.popitem(last=False)
                evicted.close()
            return fresh

    def known(self, project_id: int) -> NERBackendModel | None:
        with self._lock:
            model = self._models.get(project_id)
            if model is not None:
                self._models.move_to_end(project_id)
            return model

    def all(self) -> list[NERBackendModel]:
        with self._lock:
            return list(self._models.values())
