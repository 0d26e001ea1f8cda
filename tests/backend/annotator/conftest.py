"""Fixtures for the annotator tests: a label schema, a cheap embedder and a scriptable LLM HTTP server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from annot_fakes import FakeEmbedder, FakeLLM
from flask import Flask, request
from werkzeug.serving import make_server

from backend.labeling_config import LabelSchema, LabelSpec


@pytest.fixture
def schema() -> LabelSchema:
    return LabelSchema("label", "text", "text", [
        LabelSpec("Chemical", "a chemical or drug"),
        LabelSpec("Disease", "a disease or symptom"),
    ])


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    fake = FakeLLM()
    app = Flask("fake-llm")

    @app.post("/v1/chat/completions")
    def chat() -> Any:
        return fake.handle(request.get_json(force=True), dict(request.headers))

    server = make_server("127.0.0.1", 0, app, threaded=True)
    fake.url = f"http://127.0.0.1:{server.port}/v1"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        thread.join(5)
