"""The composition root: everything a process builds from `Settings`, built once, lazily, here only.

The web app, the RQ worker, `llmaaa acquire`, `setup-project` and `extract` all get their Label Studio
client, LLM stack (client, reply cache, cost ledger, prompt template), sentence embedder, per-project
paths and per-project annotator from one `Services`, so the wiring is typed out once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from backend.annotator.annotator import LLMAnnotator
from backend.annotator.cache import ReplyCache
from backend.annotator.client import LLMClient
from backend.annotator.demos import DemoIndex
from backend.annotator.ledger import CostLedger
from backend.annotator.prompt import DEFAULT_TEMPLATE_NAME, PromptTemplate
from backend.labeling_config import LabelSchema, parse_label_config
from backend.labelstudio import connect
from backend.llm_labels import LLMLabelStore
from backend.paths import ProjectPaths
from backend.project_annotator import ProjectAnnotator
from backend.settings import Settings, get_settings
from backend.state import ProjectState
from training.data import Example

T = TypeVar("T")


class Services:
    """Process-wide resources. Thread-safe: each one is built on first use, under one lock."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._lock = threading.RLock()
        self._built: dict[str, Any] = {}

    def _once(self, name: str, build: Callable[[], T]) -> T:
        with self._lock:
            if name not in self._built:
                self._built[name] = build()
            return self._built[name]  # type: ignore[no-any-return]

    @property
    def data_dir(self) -> Path:
        return Path(self.settings.llmaaa_data_dir)

    # ------------------------------------------------------------ Label Studio

    def label_studio(self) -> Any:
        """A client for the *configured* Label Studio only: the environment's API key never goes to a
        host named in a request (see the README's security section)."""
        s = self.settings
        key = s.label_studio_api_key.get_secret_value() if s.label_studio_api_key else ""
        return connect(s.label_studio_url or "", key)

    def label_studio_target(self, request_url: str | None, request_token: str | None) -> tuple[str, str] | None:
        """Where the backend may call Label Studio for a project, and with which key; None: nowhere.

        LABEL_STUDIO_API_KEY only ever goes to LABEL_STUDIO_URL. A `hostname` from a /setup request is used
        only together with that request's own `access_token`: otherwise anyone who can reach /setup could
        name a host and receive the configured key (issue 12). A configured URL always wins over a request's.
        """
        s = self.settings
        env_key = s.label_studio_api_key.get_secret_value() if s.label_studio_api_key else None
        if s.label_studio_url:
            key = env_key or request_token
            return (s.label_studio_url, key) if key else None
        if request_url and request_token:
            return request_url, request_token
        return None

    # ------------------------------------------------------------ the LLM stack

    def llm_client(self) -> LLMClient:
        s = self.settings
        return self._once("llm_client", lambda: LLMClient(
            base_url=s.openai_base_url, api_key=s.llm_api_key(), model=s.llm_model, timeout=s.llm_timeout_s,
            max_retries=s.llm_max_retries, max_tokens=s.llm_max_tokens, structured_output=s.llm_structured_output))

    def reply_cache(self) -> ReplyCache:
        folder = self.settings.llm_cache_dir
        return self._once("reply_cache", lambda: ReplyCache(folder or self._data_subdir("llm-cache")))

    def ledger(self) -> CostLedger:
        s = self.settings
        return self._once("ledger", lambda: CostLedger(s.llm_ledger_file or self._data_subdir() / "costs.jsonl",
                                                        prices_file=s.llm_prices_file))

    def template(self) -> PromptTemplate:
        """The prompt template of LLM_PROMPT_VERSION (None: `DEFAULT_TEMPLATE_VERSION`, ner.v2)."""
        version = self.settings.llm_prompt_version
        return self._once("template", lambda: PromptTemplate.load(DEFAULT_TEMPLATE_NAME, version))

    def embedder(self) -> Any:
        """MiniLM sentence embeddings (heavy: loaded on first need, once per process)."""
        from training.embedder import SentenceEmbedder

        return self._once("embedder", SentenceEmbedder)

    def _data_subdir(self, name: str = "") -> Path:
        path = self.data_dir / name if name else self.data_dir
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ------------------------------------------------------------ per project

    def paths(self, project_id: int) -> ProjectPaths:
        return ProjectPaths(self.data_dir, project_id)

    def state(self, project_id: int) -> ProjectState:
        return ProjectState(self.data_dir, project_id)

    def llm_labels(self, project_id: int) -> LLMLabelStore:
        return LLMLabelStore(self.data_dir, project_id)

    def schema(self, label_config: str) -> LabelSchema:
        return parse_label_config(label_config, labels_file=self.settings.labels_file)

    def demo_index(self, examples: Sequence[Example] = ()) -> DemoIndex:
        """A k-NN demonstration index, filled with `examples` (human-verified, meta split only)."""
        index = DemoIndex(LazyEmbedder(self), k=self.settings.knn_k)
        for ex in examples:
            index.upsert(ex.id, ex.text, ex.spans)
        return index

    def annotator(self, schema: LabelSchema, demo_index: DemoIndex | None = None) -> LLMAnnotator:
        s = self.settings
        return LLMAnnotator(client=self.llm_client(), schema=schema, template=self.template(),
                            cache=self.reply_cache(), ledger=self.ledger(), demo_index=demo_index, k=s.knn_k,
                            domain=s.ner_domain, max_chars=s.max_task_chars)

    def project_annotator(self, project_id: int, schema: LabelSchema,
                          demo_index: DemoIndex | None = None) -> ProjectAnnotator:
        return ProjectAnnotator(project_id, schema, self.annotator(schema, demo_index), self.llm_labels(project_id))


class LazyEmbedder:
    """Defers loading MiniLM until the first demo is embedded (keeps /setup fast)."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def embed(self, texts: list[str]) -> Any:
        return self.services.embedder().embed(texts)

