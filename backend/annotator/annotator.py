"""The LLM as an NER annotator: demos → prompt → (cache | LLM) → parse → ground → outcome.

The rule that matters downstream: a failure is `ok=False` with the reason and means "not annotated,
ask again later". Only a well-formed, unambiguous empty answer is `ok=True` with no spans, i.e. "this
text has no entities". `error` starts with the reason word:
- `too_long`: the text has more than `max_chars` characters (MAX_TASK_CHARS); it was not sent;
- `rate_limited`, `http_error`, `timeout`, `connection`: no answer, retries included (`LLMCallError`);
- `cut_off`: the reply stopped at the token limit (finish_reason "length"), even if it parses;
- `content_filter`: the provider withheld (part of) the reply (finish_reason "content_filter");
- `malformed_reply`: no single complete JSON answer (see `backend.annotator.parsing`);
- `no_text`, `error`: nothing to annotate; an unexpected exception.
Failures are never cached; cut-off, filtered and malformed replies still go to the cost ledger (the
tokens were paid for) and count in `llmaaa_llm_errors_total`.

`annotate(text, variant)` sends the request of one rung of the content-failure retry ladder
(`backend.annotator.retry_ladder`: fewer demonstrations, sampling with a derived seed); the default is the
base request. Which rung an attempt gets is decided by the caller from the task's failure record
(`backend.project_annotator`); the outcome says which rung it was (`outcome.variant`).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Protocol

from tqdm import tqdm

from backend.annotator.cache import ReplyCache
from backend.annotator.client import GREEDY, Completion, LLMCallError, Sampling, entities_json_schema
from backend.annotator.demos import DemoIndex
from backend.annotator.ledger import CostLedger
from backend.annotator.parsing import MalformedReplyError, ground, parse_reply
from backend.annotator.prompt import Demo, PromptTemplate
from backend.annotator.retry_ladder import BASE, RequestVariant
from backend.labeling_config import LabelSchema
from backend.metrics import NO_STATUS, REGISTRY, Registry
from training.spans import Span

log = logging.getLogger(__name__)

# finish_reason values that mean the reply is not the whole answer -> the failure reason they give.
INCOMPLETE_FINISH = {"length": "cut_off", "content_filter": "content_filter"}


class ChatClient(Protocol):
    model: str

    def complete(self, messages: Sequence[dict[str, str]], json_schema: dict[str, Any] | None = None,
                 sampling: Sampling = GREEDY) -> Completion: ...


@dataclass
class AnnotationOutcome:
    """The result for one text. `error` starts with a reason word: `timeout: no answer within 30 s`."""

    ok: bool
    spans: list[Span] = field(default_factory=list)
    error: str | None = None
    cached: bool = False
    dropped: list[tuple[str, str, str]] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    variant: RequestVariant = BASE  # the request that was sent (its rung of the retry ladder)
    request: str = ""  # that request in words, for `llm_status`: "rung 1, fewer demos: 2 demos, greedy"

    @property
    def reason(self) -> str | None:
        """The failure's reason word (`cut_off`, `too_long`, ...); None for a success."""
        return None if self.ok else (self.error or "error").split(":", 1)[0].strip() or "error"


class LLMAnnotator:
    """Annotates texts for one label schema with one LLM, prompt version, cache and cost ledger."""

    def __init__(self, client: ChatClient, schema: LabelSchema, template: PromptTemplate,
                 cache: ReplyCache | None = None, ledger: CostLedger | None = None,
                 demo_index: DemoIndex | None = None, k: int = 5, domain: str | None = None,
                 max_chars: int | None = None, metrics: Registry | None = None) -> None:
        """`max_chars`: longest text sent to the LLM (None: the MAX_TASK_CHARS setting); demonstrations
        share the same budget."""
        self.client = client
        self.schema = schema
        self.template = template
        self.cache = cache
        self.ledger = ledger
        self.demo_index = demo_index
        self.k = k
        self.domain = domain
        if max_chars is None:
            from backend.settings import get_settings  # lazily: a caller holding Settings passes it

            max_chars = get_settings().max_task_chars
        if max_chars < 1:
            raise ValueError(f"max_chars must be at least 1, not {max_chars}")
        self.max_chars = int(max_chars)
        self.metrics = REGISTRY if metrics is None else metrics
        self._json_schema = entities_json_schema(schema.values)
        self._lock = threading.Lock()
        self._stats: Counter[str] = Counter()

    @property
    def model_version(self) -> str:
        """`llm-<model>-<template>`, e.g. `llm-gpt-4o-mini-ner.v1`; Label Studio stores it per prediction."""
        raw = f"llm-{self.client.model}-{self.template.template_id}"
        return re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-")[:120]

    @property
    def stats(self) -> dict[str, int]:
        """Cumulative counters: ok, failed, cached."""
        with self._lock:
            return {key: self._stats[key] for key in ("ok", "failed", "cached")}

    def _count(self, outcome: AnnotationOutcome) -> AnnotationOutcome:
        with self._lock:
            self._stats["ok" if outcome.ok else "failed"] += 1
            self._stats["cached"] += int(outcome.cached)
        return outcome

    def demos_for(self, text: str, k: int | None = None) -> list[Demo]:
        """The k (default `self.k`) nearest demos, most similar last, trimmed to `max_chars` characters of demo
        text in all (the least similar go first): a few huge verified tasks must not make every prompt huge."""
        k = self.k if k is None else k
        if self.demo_index is None or k <= 0:
            return []
        try:
            demos = self.demo_index.nearest(text, k)
        except Exception as exc:  # noqa: BLE001 - annotating without demos beats not annotating
            log.warning("demo retrieval failed (%s: %s); annotating zero-shot", type(exc).__name__, exc)
            return []
        kept: list[Demo] = []
        budget = self.max_chars
        for demo in reversed(demos):
            if len(demo.text) > budget:
                break
            budget -= len(demo.text)
            kept.append(demo)
        return kept[::-1]

    def messages_for(self, text: str, variant: RequestVariant = BASE) -> list[dict[str, str]]:
        return self._request(text, variant)[0]

    def _request(self, text: str, variant: RequestVariant) -> tuple[list[dict[str, str]], str]:
        """The rendered messages of `variant`'s request for `text`, and the request in words."""
        demos = self.demos_for(text, variant.k(self.k))
        return (self.template.render(self.schema.labels, demos, text, self.domain), variant.describe(len(demos)))

    def cache_key(self, text: str, variant: RequestVariant = BASE) -> str:
        """The reply cache key of `text`'s request on `variant`'s rung (messages and sampling both in it)."""
        return ReplyCache.key(self.client.model, self.template.cache_id, self.messages_for(text, variant),
                              self._key_part(variant.sampling(text)))

    def _key_part(self, sampling: Sampling) -> dict[str, Any] | None:
        """What of the request, besides model, template and messages, changes the reply: the sampling of a
        retry rung, and free-text output. JSON-schema requests keep the keys they always had; a free-text
        request (LLM_STRUCTURED_OUTPUT=false, or an endpoint that rejects json_schema) gets its own, so it
        is never served a reply that was made under the schema."""
        part = dict(sampling.cache_part() or {})
        if getattr(self.client, "schema_supported", None) is False:
            part["output"] = "text"
        return part or None

    def annotate(self, text: str, variant: RequestVariant = BASE) -> AnnotationOutcome:
        if not isinstance(text, str) or not text.strip():
            return self._count(AnnotationOutcome(ok=False, error="no_text: nothing to annotate"))
        if len(text) > self.max_chars:
            # Never sent: a paid LLM bills every character, and the reply would be cut off anyway.
            return self._count(AnnotationOutcome(
                ok=False, error=f"too_long: the text has {len(text)} characters, more than MAX_TASK_CHARS "
                                f"({self.max_chars}); not sent to the LLM"))
        request = variant.describe(variant.k(self.k))  # what was meant, should rendering fail
        try:
            messages, request = self._request(text, variant)
            outcome = self._annotate(text, messages, variant.sampling(text))
        except Exception as exc:  # noqa: BLE001 - one bad text must not sink a batch
            log.exception("annotation failed unexpectedly")
            outcome = AnnotationOutcome(ok=False, error=f"error: {type(exc).__name__}: {exc}")
        outcome.variant, outcome.request = variant, request
        return self._count(outcome)

    def _annotate(self, text: str, messages: list[dict[str, str]], sampling: Sampling) -> AnnotationOutcome:
        model = self.client.model
        key = ReplyCache.key(model, self.template.cache_id, messages, self._key_part(sampling))
        completion = self.cache.get(key) if self.cache is not None else None
        cached = completion is not None
        if completion is None:
            try:
                completion = self.client.complete(messages, json_schema=self._json_schema, sampling=sampling)
            except LLMCallError as exc:
                return AnnotationOutcome(ok=False, error=f"{exc.reason}: {exc}",
                                         usage={"attempts": exc.attempts})
        usage: dict[str, Any] = {
            "prompt_tokens": 0 if cached else completion.prompt_tokens,
            "completion_tokens": 0 if cached else completion.completion_tokens,
            "latency_s": round(completion.latency_s, 3),
            "attempts": completion.attempts,
        }
        incomplete = INCOMPLETE_FINISH.get(str(completion.finish_reason or ""))
        if incomplete is not None:
            # A cut-off reply may still parse (`[]` before the real answer): it is never an answer.
            self._record(model, completion, cached, ok=False, usage=usage, reason=incomplete)
            self.metrics.inc("llmaaa_llm_errors_total", kind=incomplete, status=NO_STATUS)
            return AnnotationOutcome(ok=False, usage=usage, error=(
                f"{incomplete}: the reply stopped with finish_reason {completion.finish_reason!r} after "
                f"{completion.completion_tokens} tokens; not annotated"))
        try:
            pairs = parse_reply(completion.content)
        except MalformedReplyError as exc:
            self._record(model, completion, cached, ok=False, usage=usage, reason="malformed_reply")
            self.metrics.inc("llmaaa_llm_errors_total", kind="malformed", status=NO_STATUS)
            return AnnotationOutcome(ok=False, error=f"malformed_reply: {exc}", usage=usage)
        self._record(model, completion, cached, ok=True, usage=usage)
        if not cached and self.cache is not None:
            self.cache.put(key, completion, self.template.cache_id)  # successes only
        grounded = ground(text, pairs, self.schema)
        return AnnotationOutcome(ok=True, spans=grounded.spans, cached=cached, dropped=grounded.dropped,
                                 usage=usage)

    def _record(self, model: str, completion: Completion, cached: bool, ok: bool,
                usage: dict[str, Any], reason: str | None = None) -> None:
        if self.ledger is None:
            return
        entry = self.ledger.record(model, completion.prompt_tokens, completion.completion_tokens,
                                   cached=cached, ok=ok, latency_s=None if cached else completion.latency_s,
                                   reason=reason)
        usage["usd"] = entry["usd"]

    def annotate_many(self, texts: Sequence[str], concurrency: int = 8, progress: bool = True,
                      variants: Sequence[RequestVariant] | None = None) -> list[AnnotationOutcome]:
        """Outcomes in input order; `variants[i]` is the request for `texts[i]` (default: all base). Identical
        (text, variant) pairs are asked once; at most `concurrency` calls in flight."""
        requests = list(zip(texts, variants if variants is not None else [BASE] * len(texts), strict=True))
        unique = list(dict.fromkeys(requests))
        if not unique:
            return []
        done: dict[tuple[str, RequestVariant], AnnotationOutcome] = {}
        counts: Counter[str] = Counter()
        workers = max(1, min(concurrency, len(unique)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="annotate") as pool, \
                tqdm(total=len(unique), desc="LLM annotation", unit="text", disable=not progress) as bar:
            futures = {pool.submit(self.annotate, text, variant): (text, variant) for text, variant in unique}
            try:
                for future in as_completed(futures):
                    outcome = future.result()
                    done[futures[future]] = outcome
                    counts["ok" if outcome.ok else "failed"] += 1
                    counts["cached"] += int(outcome.cached)
                    bar.set_postfix(ok=counts["ok"], failed=counts["failed"], cached=counts["cached"],
                                    refresh=False)
                    bar.update()
            except BaseException:
                # Ctrl-C or SIGTERM (SystemExit): the pool's exit would otherwise wait for every queued
                # call of the batch; drop the ones not started, let the in-flight ones finish.
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        log.info("annotated %d texts (%d distinct requests): %d ok, %d failed, %d from cache", len(texts),
                 len(unique), counts["ok"], counts["failed"], counts["cached"])
        return [done[request] for request in requests]
