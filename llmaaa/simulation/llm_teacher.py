"""A REAL LLM as the teacher of the offline LLMaAA loop (`llmaaa simulate --teacher llm`).

Unlike `SimulatedTeacher`, nothing here knows the gold labels of the sentences it labels: each one
goes through the backend's annotator (prompt, client, parsing, grounding; from the composition root,
`llmaaa.llm_eval.llm_services`) to an OpenAI-compatible endpoint (e.g. `llmaaa local-llm`), with the k
nearest gold examples (MiniLM, `DemoIndex`) as demonstrations, the same k-NN retrieval as the backend.
Replies are cached on disk by prompt, so a re-run with the same endpoint, model and demonstrations makes
no LLM call.

A failed call is recorded in `failures` and raised as `LLMTeacherError` by `label` (None in
`label_many`): the caller leaves that sentence unlabeled. It is never an empty label.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from training.data import Example

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path(".llmaaa") / "llm-teacher-cache"


class LLMTeacherError(RuntimeError):
    """The LLM gave no usable answer for one sentence (after the client's retries)."""

    def __init__(self, example_id: str, error: str) -> None:
        super().__init__(f"{example_id}: {error}")
        self.example_id = example_id
        self.error = error

    @property
    def reason(self) -> str:
        return self.error.split(":", 1)[0].strip() or "error"


class LLMTeacher:
    """Labels sentences with an LLM endpoint; k-NN demonstrations from `gold`, replies cached.

    `base_url` / `model` / `api_key` default to `OPENAI_BASE_URL`, `LLM_MODEL` (else the endpoint's
    first listed model) and `OPENAI_API_KEY`. `descriptions` are the verbalized label hints (e.g.
    `llmaaa.llm_eval.label_descriptions(data_dir)`); without them each label is described by its name.
    `annotator` replaces the whole annotator (tests).
    """

    def __init__(self, gold: Sequence[Example], labels: Sequence[str], *, base_url: str | None = None,
                 model: str | None = None, api_key: str | None = None, cache_dir: Path | None = None,
                 k: int = 5, descriptions: Mapping[str, str] | None = None, json_schema: bool = True,
                 timeout: float = 180.0, max_retries: int = 2, max_tokens: int = 256,
                 prompt_version: str | None = None, embedder: Any = None, annotator: Any = None) -> None:
        self.gold = list(gold)
        self.labels = list(labels)
        self.k = k
        self.calls = 0
        self.failures: dict[str, str] = {}
        self._lock = threading.Lock()
        self._reasons: Counter[str] = Counter()
        self._cached = 0
        self.annotator = annotator if annotator is not None else self._build(
            base_url, model, api_key, cache_dir or DEFAULT_CACHE, descriptions, json_schema, timeout, max_retries,
            max_tokens, prompt_version, embedder)

    def _build(self, base_url: str | None, model: str | None, api_key: str | None, cache_dir: Path,
               descriptions: Mapping[str, str] | None, json_schema: bool, timeout: float, max_retries: int,
               max_tokens: int, prompt_version: str | None, embedder: Any) -> Any:
        """The backend's annotator, from the composition root set for this endpoint (as `llm-eval` does)."""
        from llmaaa.llm_eval import CachedEmbedder, build_schema, knn_index, llm_services, resolve_model

        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise ValueError("the LLM teacher needs an endpoint: set OPENAI_BASE_URL or pass base_url")
        api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        model = resolve_model(base_url, api_key, model)
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        schema = build_schema(self.labels, dict(descriptions or {}), hints=bool(descriptions))
        demo_index = None
        if self.k > 0 and self.gold:
            demo_index = knn_index(self.gold, embedder or CachedEmbedder(cache_dir / "embeddings.npz"), self.k)
        services = llm_services(base_url=base_url, api_key=api_key, model=model, cache=cache_dir,
                                ledger=cache_dir / "costs.jsonl", k=self.k, timeout=timeout, max_retries=max_retries,
                                max_tokens=max_tokens, json_schema=json_schema, prompt_version=prompt_version)
        annotator = services.annotator(schema, demo_index)
        log.info("LLM teacher: %s at %s, prompt %s, %d gold demos (k=%d), cache %s", model, base_url,
                 annotator.template.template_id, len(self.gold), self.k, cache_dir)
        return annotator

    def _outcome(self, ex: Example, outcome: Any) -> Example | None:
        with self._lock:
            self.calls += 1
            self._cached += int(bool(outcome.cached))
            if not outcome.ok:
                error = outcome.error or "error: no reason given"
                self.failures[ex.id] = error
                self._reasons[error.split(":", 1)[0]] += 1
                return None
            self.failures.pop(ex.id, None)  # a later success clears an earlier failure
        return Example(ex.id, ex.text, list(outcome.spans), ex.tokens)

    def label(self, ex: Example) -> Example:
        """The LLM's spans for `ex` (gold spans never used). Raises `LLMTeacherError` on failure."""
        labeled = self._outcome(ex, self.annotator.annotate(ex.text))
        if labeled is None:
            raise LLMTeacherError(ex.id, self.failures[ex.id])
        return labeled

    def label_many(self, examples: Sequence[Example], concurrency: int = 1) -> list[Example | None]:
        """Labels in input order, None where the LLM failed (see `failures`)."""
        outcomes = self.annotator.annotate_many([ex.text for ex in examples], concurrency=concurrency,
                                                progress=False)
        return [self._outcome(ex, o) for ex, o in zip(examples, outcomes, strict=True)]

    @property
    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"calls": self.calls, "cached": self._cached, "failed": len(self.failures),
                    "failure_reasons": dict(self._reasons)}
