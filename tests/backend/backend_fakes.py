"""Test doubles for the web backend: an in-process chat client (no network) and an app built around it."""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask

from backend.annotator.client import GREEDY, Completion, Sampling
from backend.app import create_app
from backend.labeling_config import LabelSpec, build_label_config
from backend.registry import ModelRegistry, Runtime
from backend.settings import Settings

CONFIG = build_label_config([LabelSpec("Chemical", "a drug or chemical"), LabelSpec("Disease", "a disease")])
# Every reply claims this mention; grounding keeps it only where the text contains it.
MENTION = "aspirin"


class HashEmbedder:
    """Bag-of-words vectors from hashed words: demo-index updates without loading MiniLM."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), 32), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.split():
                out[row, zlib.crc32(word.encode("utf-8", "replace")) % 32] += 1.0
        return out + 1e-3  # never an all-zero row


class FakeChat:
    """A chat client that answers at once (or after `delay_s`, until `release` is set), counting calls."""

    model = "fake-llm"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.release = threading.Event()
        self.calls = 0
        self._lock = threading.Lock()

    def complete(self, messages: Sequence[dict[str, str]], json_schema: dict[str, Any] | None = None,
                 sampling: Sampling = GREEDY) -> Completion:
        with self._lock:
            self.calls += 1
        if self.delay_s:
            self.release.wait(self.delay_s)
        content = json.dumps({"entities": [{"span": MENTION, "type": "Chemical"}]})
        return Completion(content=content, prompt_tokens=10, completion_tokens=5, model=self.model,
                          latency_s=self.delay_s)


def fake_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"llmaaa_data_dir": data_dir, "openai_base_url": "http://127.0.0.1:9/v1",
                              "llm_model": "fake-llm", "label_studio_url": None, "label_studio_api_key": None,
                              "redis_url": "", "predict_deadline_s": 20.0, **overrides}
    return Settings(**values)


def fake_app(data_dir: Path, chat: FakeChat | None = None, **overrides: Any) -> Flask:
    """The real app and registry, with the LLM replaced by `chat`, so nothing leaves the process."""
    settings = fake_settings(data_dir, **overrides)
    registry = ModelRegistry(settings, runtime=Runtime(settings, client=chat or FakeChat(), embedder=HashEmbedder()))
    return create_app(settings, registry)
