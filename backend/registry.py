"""The web process: its runtime (the composition root plus the LLM lanes) and its bounded model registry."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from backend.annotator.annotator import ChatClient
from backend.composition import Services
from backend.model import NERBackendModel
from backend.retrier import FailedTaskRetrier, RetrierThread
from backend.serving import LLMLanes
from backend.settings import Settings, get_settings


class Runtime(Services):
    """`Services` for the web process; tests may inject the chat client and the embedder."""

    def __init__(self, settings: Settings, client: ChatClient | None = None, embedder: Any = None) -> None:
        super().__init__(settings)
        self._client, self._embedder = client, embedder
        self.lanes = LLMLanes(settings)

    def llm_client(self) -> Any:
        return self._client if self._client is not None else super().llm_client()

    def embedder(self) -> Any:
        return self._embedder if self._embedder is not None else super().embedder()


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
        self._retrier: RetrierThread | None = None

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

    def retriers(self) -> list[FailedTaskRetrier]:
        """The failed-task retriers of confirmed projects (an unconfirmed one has nothing recorded)."""
        return [m.retrier for m in self.all() if m.confirmed() and not m.closed]

    def start_retrier(self) -> None:
        """One background thread retries every project's failed LLM calls (LLM_RETRY_INTERVAL_S; 0 = off)."""
        interval = self.settings.llm_retry_interval_s
        if interval > 0 and self._retrier is None:
            self._retrier = RetrierThread(self.retriers, interval).start()
