"""The one place that talks to the LLM: any OpenAI-compatible chat endpoint, through `openai`.

The retry policy lives here and only here. The openai client's own retries are disabled
(`max_retries=0`), so every attempt is ours, bounded (`max_retries`) and counted: exponential backoff
with full jitter on 408/409/429/5xx, timeouts and connection errors, honouring `Retry-After` /
`retry-after-ms` (capped at `backoff_max`). Other 4xx are not retried. Each failed attempt counts in
`llmaaa_llm_errors_total{kind, status}` and each retry in `llmaaa_llm_retries_total{kind, status}`
(`backend.metrics`). Structured output is tried first (`response_format` json_schema); an endpoint that
rejects it is remembered and then prompted plainly (the parser is tolerant).

A completion comes back with its `finish_reason`; judging it ("length" = cut off) is the caller's job
(`LLMAnnotator`), since the tokens were spent and the ledger must see them.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import openai

from backend.metrics import NO_STATUS, REGISTRY, Registry

log = logging.getLogger(__name__)

Reason = Literal["timeout", "rate_limited", "http_error", "connection"]
RETRYABLE_STATUS = {408, 409, 429}  # and every 5xx
# A server that does not support `response_format: json_schema` answers one of these.
SCHEMA_REJECT_STATUS = {400, 422}


class LLMCallError(RuntimeError):
    """No answer from the LLM, retries included. `reason`: timeout, rate_limited, http_error or connection."""

    def __init__(self, reason: Reason, message: str, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.status = status
        self.attempts = attempts


@dataclass(frozen=True)
class Completion:
    content: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    latency_s: float
    attempts: int = 1
    structured: bool = False  # sent with a json_schema response_format
    finish_reason: str | None = None  # "stop", "length" (cut off), "content_filter", ...; None from the cache


@dataclass(frozen=True)
class Sampling:
    """How the reply is decoded. The default, greedy (temperature 0, no seed), is what every first attempt
    sends; only a retry after a content failure asks for sampling (`backend.annotator.retry_ladder`)."""

    temperature: float = 0.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def cache_part(self) -> dict[str, Any] | None:
        """What the reply cache key must add for this decoding; None for greedy, whose keys stay as before."""
        return None if self.greedy else {"temperature": self.temperature, "seed": self.seed}


GREEDY = Sampling()


def entities_json_schema(labels: Sequence[str]) -> dict[str, Any]:
    """The OpenAI `json_schema` response format for `{"entities": [{"span", "type"}]}` (strict)."""
    return {
        "name": "ner_entities",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "entities": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "span": {"type": "string"},
                            "type": {"type": "string", "enum": list(labels)},
                        },
                        "required": ["span", "type"],
                        "additionalProperties": False,
                    },
                }
            },
            "required": ["entities"],
            "additionalProperties": False,
        },
    }


def _retry_after(exc: openai.APIStatusError) -> float | None:
    """Seconds the server asked us to wait, from `retry-after-ms` or `Retry-After` (seconds or a date)."""
    headers = getattr(exc.response, "headers", None) or {}
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


@dataclass(frozen=True)
class _Failure:
    reason: Reason
    kind: str  # the metric label: rate_limited, server_error, http_error, timeout, connection
    status: int | None
    message: str
    retryable: bool
    wait: float | None  # Retry-After, when the server gave one


class LLMClient:
    """A chat-completions client for one endpoint and model (temperature 0 unless asked). Thread-safe."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str,
        model: str,
        timeout: float = 30.0,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_tokens: int | None = 1024,
        structured_output: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        metrics: Registry | None = None,
    ) -> None:
        self.base_url = base_url
        self.model = model
        self.timeout = timeout
        self.max_retries = max(0, int(max_retries))
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_tokens = max_tokens
        self._sleep = sleep
        self.metrics = REGISTRY if metrics is None else metrics
        # None: not known yet; False: this endpoint rejected json_schema, so it is not sent again.
        self.schema_supported: bool | None = None if structured_output else False
        self._lock = threading.Lock()
        self._stats: Counter[str] = Counter()
        # max_retries=0: the openai client must not retry behind our back (ours are the counted ones).
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout,
                                     max_retries=0)
        self._secret = api_key or ""

    def __repr__(self) -> str:  # never the key
        return f"LLMClient(base_url={self.base_url!r}, model={self.model!r}, timeout={self.timeout})"

    @property
    def stats(self) -> dict[str, int]:
        """Counters: requests (HTTP attempts), retries, completions, failures, schema_fallbacks."""
        with self._lock:
            return dict(self._stats)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def _redact(self, message: str) -> str:
        if len(self._secret) >= 4:
            message = message.replace(self._secret, "***")
        return message[:500]

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.backoff_max)
        # Full jitter: concurrent workers that failed together do not retry together.
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt))

    def _request(self, messages: Sequence[Mapping[str, str]], response_format: dict[str, Any] | None,
                 sampling: Sampling) -> Any:
        kwargs: dict[str, Any] = {"model": self.model, "messages": list(messages),
                                  "temperature": 0 if sampling.greedy else sampling.temperature}
        if sampling.seed is not None:
            kwargs["seed"] = sampling.seed
        if self.max_tokens:
            kwargs["max_tokens"] = self.max_tokens
        if response_format is not None:
            kwargs["response_format"] = response_format
        self._count("requests")
        return self._client.chat.completions.create(**kwargs)

    def complete(self, messages: Sequence[Mapping[str, str]], json_schema: dict[str, Any] | None = None,
                 sampling: Sampling = GREEDY) -> Completion:
        """One chat completion. Raises `LLMCallError` once the retries are spent (the one retry policy for
        transport failures: every attempt here sends the same request, `sampling` included)."""
        use_schema = json_schema is not None and self.schema_supported is not False
        attempt = 0
        started = time.monotonic()
        while True:
            fmt = {"type": "json_schema", "json_schema": json_schema} if use_schema else None
            try:
                response = self._request(messages, fmt, sampling)
                break
            except openai.APIStatusError as exc:
                if use_schema and exc.status_code in SCHEMA_REJECT_STATUS and self.schema_supported is not True:
                    # Maybe json_schema is unsupported, maybe the request is bad: the plain retry below
                    # tells which, and only its success marks the endpoint as schema-less.
                    log.info("LLM endpoint answered %s to a json_schema response_format; retrying without it",
                             exc.status_code)
                    use_schema = False
                    self._count("schema_fallbacks")
                    continue
                failure = self._classify(exc)
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                failure = self._classify(exc)
            self._after_failure(failure, attempt)
            attempt += 1
        if json_schema is not None and self.schema_supported is None:
            # The first success settles it: schema accepted, or plain worked after a 4xx on schema.
            self.schema_supported = use_schema
            if not use_schema:
                log.warning("LLM endpoint %s rejects json_schema output; using plain prompting from now on",
                            self.base_url or "(default)")
        self._count("completions")
        return self._completion(response, time.monotonic() - started, attempt + 1, use_schema)

    def _classify(self, exc: Exception) -> _Failure:
        """Reason, metric kind, HTTP status, message and whether (and after what wait) to retry."""
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            retryable = status in RETRYABLE_STATUS or status >= 500
            reason: Reason = "rate_limited" if status == 429 else "http_error"
            return _Failure(reason, "server_error" if status >= 500 else reason, status,
                            f"HTTP {status}: {self._redact(str(exc))}", retryable,
                            _retry_after(exc) if retryable else None)
        if isinstance(exc, openai.APITimeoutError):  # before APIConnectionError: it is a subclass
            return _Failure("timeout", "timeout", None, f"no answer within {self.timeout:g} s", True, None)
        return _Failure("connection", "connection", None,
                        self._redact(f"cannot reach the LLM endpoint: {exc}"), True, None)

    def _after_failure(self, failure: _Failure, attempt: int) -> None:
        """Count the failure; raise once retries are spent, else sleep the backoff."""
        labels = {"kind": failure.kind, "status": NO_STATUS if failure.status is None else str(failure.status)}
        self.metrics.inc("llmaaa_llm_errors_total", **labels)
        if not failure.retryable or attempt >= self.max_retries:
            self._count("failures")
            log.warning("LLM call failed after %d attempt(s): %s: %s", attempt + 1, failure.reason, failure.message)
            raise LLMCallError(failure.reason, failure.message, failure.status, attempt + 1)
        delay = self._backoff(attempt, failure.wait)
        self._count("retries")
        self.metrics.inc("llmaaa_llm_retries_total", **labels)
        log.info("LLM %s (attempt %d), retrying in %.2f s", failure.reason, attempt + 1, delay)
        self._sleep(delay)

    def _completion(self, response: Any, latency_s: float, attempts: int, structured: bool) -> Completion:
        choice = response.choices[0] if response.choices else None
        content = (choice.message.content if choice and choice.message else None) or ""
        usage = getattr(response, "usage", None)
        return Completion(
            content=content,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            model=str(getattr(response, "model", None) or self.model),
            latency_s=latency_s,
            attempts=attempts,
            structured=structured,
            finish_reason=(getattr(choice, "finish_reason", None) or None) if choice else None,
        )
