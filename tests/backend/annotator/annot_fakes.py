"""Test doubles for the annotator tests: a cheap embedder and a scriptable LLM HTTP server (see conftest)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flask import Response

API_KEY = "sk-test-0123456789-secret"


class FakeEmbedder:
    """Deterministic bag-of-words vectors (hashed words), recording what it was asked to embed."""

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.calls: list[list[str]] = []
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            self.calls.append(list(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    @property
    def embedded(self) -> list[str]:
        return [t for call in self.calls for t in call]


# ---------------------------------------------------------------------- the fake LLM server


def completion_body(content: str, model: str = "fake-model", prompt_tokens: int = 100,
                    completion_tokens: int = 20, finish_reason: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "finish_reason": finish_reason,
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def query_of(body: dict[str, Any]) -> str:
    """The query, as the architecture's prompt contract defines it.

    ner.v2: the JSON string on the last line that starts with `Input: `; ner.v1: the text after the
    last `Input: `, before `\\nOutput:`.
    """
    user = body["messages"][-1]["content"]
    lines = [line for line in user.split("\n") if line.startswith("Input: ")]
    try:
        value = json.loads(lines[-1][len("Input: "):])
    except (ValueError, IndexError):
        value = None
    if isinstance(value, str):
        return value
    return user.rsplit("Input: ", 1)[1].split("\nOutput:", 1)[0]


Action = Callable[[dict[str, Any]], Response | dict[str, Any]]


def reply(content: str, **kw: Any) -> Action:
    return lambda body: completion_body(content, **kw)


def status(code: int, headers: dict[str, str] | None = None, message: str = "error") -> Action:
    def act(body: dict[str, Any]) -> Response:
        return Response(json.dumps({"error": {"message": message, "type": "test"}}), status=code,
                        headers=headers or {}, mimetype="application/json")
    return act


def sleep_then(seconds: float, then: Action) -> Action:
    def act(body: dict[str, Any]) -> Response | dict[str, Any]:
        time.sleep(seconds)
        return then(body)
    return act


@dataclass
class FakeLLM:
    """A real HTTP server speaking `/v1/chat/completions`; each request pops the next scripted action."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    script: list[Action] = field(default_factory=list)
    default: Action = field(default_factory=lambda: reply('{"entities": []}'))
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, body: dict[str, Any], headers: dict[str, str]) -> Response | dict[str, Any]:
        with self.lock:
            self.requests.append(body)
            self.headers.append(headers)
            action = self.script.pop(0) if self.script else self.default
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return action(body)
        finally:
            with self.lock:
                self.in_flight -= 1

    @property
    def count(self) -> int:
        return len(self.requests)
