"""The whole loop for a browser test: Redis, an LLM that fails on chosen texts, the backend and an RQ worker.

Label Studio and the simulated LLM come from the session fixtures in tests/conftest.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from flask import Flask, Response, request

from llmaaa.services import Service, serve_in_thread, start_backend, start_redis, start_worker
from tests.conftest import DEFAULT_ACQUISITION_STRATEGY, wait_for

__all__ = ["CHROMIUM", "LoopStack", "failing_llm_app", "loop_stack", "wait_for"]

CHROMIUM = Path("/usr/bin/chromium")


def failing_llm_app(upstream: str, poisoned: set[str]) -> Flask:
    """An OpenAI-compatible pass-through to `upstream` that answers HTTP 500 whenever the prompt's query
    (after the last `Input:`) holds one of `poisoned`: a task whose LLM call always fails."""
    app = Flask("failing-llm")
    client = httpx.Client(base_url=upstream.rstrip("/"), timeout=30)

    @app.route("/v1/<path:path>", methods=["GET", "POST"])
    def forward(path: str) -> Response:
        if path == "chat/completions":
            body = request.get_json(silent=True) or {}
            last = str((body.get("messages") or [{}])[-1].get("content", ""))
            query = last.rsplit("Input:", 1)[-1]  # the prompt ends with the query (raw or JSON-quoted)
            if any(text in query or json.dumps(text, ensure_ascii=False) in query for text in poisoned):
                return Response('{"error": {"message": "simulated outage for this text", "type": "server_error"}}',
                                status=500, content_type="application/json")
        upstream_resp = client.request(request.method, f"/v1/{path}", content=request.get_data(),
                                       headers={"Content-Type": request.headers.get("Content-Type", "")})
        return Response(upstream_resp.content, status=upstream_resp.status_code,
                        content_type=upstream_resp.headers.get("content-type"))

    return app


@dataclass
class LoopStack:
    env: dict[str, str]
    backend: Service
    worker: Service
    redis: Service
    poisoned: set[str] = field(default_factory=set)

    @property
    def data_dir(self) -> Path:
        return Path(self.env["LLMAAA_DATA_DIR"])


@contextmanager
def loop_stack(label_studio: Any, fake_llm: Service, work: Path, poisoned: set[str],
               **overrides: str) -> Iterator[LoopStack]:
    """Backend + worker wired to Label Studio, with an LLM that fails on every text in `poisoned`."""
    with serve_in_thread(failing_llm_app(fake_llm.url.removesuffix("/v1"), poisoned), "/v1") as llm_url:
        redis_svc = start_redis(work / "redis")
        redis_url = redis_svc.url
        env = {
            "OPENAI_BASE_URL": llm_url, "OPENAI_API_KEY": "sk-e2e-never-logged", "LLM_MODEL": "simulated-llm",
            "LLMAAA_DATA_DIR": str(work / "state"), "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_API_KEY": label_studio.token, "REDIS_URL": redis_url, "LLM_TIMEOUT_S": "5",
            "LLM_MAX_RETRIES": "1", "MIN_NEW_ANNOTATIONS": "5", "RETRAIN_MIN_VERIFIED": "4",
            "RETRAIN_MAX_EPOCHS": "1", "RETRAIN_PATIENCE": "1", "ACQUISITION_BATCH": "5",
            "ACQUISITION_STRATEGY": DEFAULT_ACQUISITION_STRATEGY, "LLMAAA_TORCH_THREADS": "1",
            # Failed calls are re-asked in the background: seconds here, not the production half-minute.
            "LLM_RETRY_BASE_DELAY_S": "2", "LLM_RETRY_INTERVAL_S": "2", **overrides,
        }
        backend = worker = None
        try:
            # Generous: on a loaded 2-core box importing torch alone can take a minute.
            backend = start_backend(env, work, "--dev", timeout=300)
            worker = start_worker(env, work)
            yield LoopStack(env, backend, worker, redis_svc, poisoned)
        finally:
            for svc in (worker, backend, redis_svc):
                if svc is not None:
                    svc.stop()
