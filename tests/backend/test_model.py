"""The web model's registry and runtime: where Label Studio credentials go, bounded memory, nothing on disk for
unconfirmed projects, and interactive requests that do not wait behind bulk ones (issue 12, items 2, 5, 7)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from backend_fakes import CONFIG, FakeChat, fake_app, fake_settings
from flask import Flask

from backend.app import create_app
from backend.model import NERBackendModel
from backend.registry import ModelRegistry, Runtime

ENV_KEY = "env-ls-key-must-stay-home"


@dataclass
class FakeLabelStudio:
    """Records every request's path and Authorization header; knows the projects in `known` (else 404)."""

    url: str = ""
    known: set[int] = field(default_factory=set)
    seen: list[tuple[str, str]] = field(default_factory=list)

    def authorizations(self) -> list[str]:
        return [auth for _, auth in self.seen]


@contextmanager
def running_fake_ls() -> Iterator[FakeLabelStudio]:
    ls = FakeLabelStudio()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            ls.seen.append((self.path, self.headers.get("Authorization", "")))
            parts = self.path.split("?")[0].strip("/").split("/")
            body: dict[str, Any] | None = None
            if parts[:2] == ["api", "projects"] and len(parts) == 3 and parts[2].isdigit() \
                    and int(parts[2]) in ls.known:
                body = {"id": int(parts[2]), "title": "p"}
            elif parts[:2] == ["api", "tasks"]:
                body = {"tasks": [], "total": 0, "total_annotations": 0, "total_predictions": 0}
            data = json.dumps(body or {"detail": "Not found."}).encode()
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ls.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ls
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture
def fake_ls() -> Iterator[FakeLabelStudio]:
    with running_fake_ls() as ls:
        yield ls


def setup_and_wait(app: Flask, project: int, **extra: Any) -> NERBackendModel:
    """POST /setup, then wait for the model's background Label Studio calls to finish."""
    resp = app.test_client().post("/setup", json={"project": f"{project}.1700000000", "schema": CONFIG, **extra})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    model = app.config["MODELS"].known(project)
    assert model.wait_demos(15)
    return model


# ---------------------------------------------------------------- item 2: the configured key stays home


def test_env_key_never_goes_to_a_hostname_from_a_request(tmp_path: Path, fake_ls: FakeLabelStudio) -> None:
    # LABEL_STUDIO_URL unset, LABEL_STUDIO_API_KEY set: the probe's setting.
    app = create_app(fake_settings(tmp_path, label_studio_api_key=ENV_KEY))
    setup_and_wait(app, 3, hostname=fake_ls.url)
    assert not any(ENV_KEY in auth for auth in fake_ls.authorizations())
    assert fake_ls.seen == [], "a hostname without its own access_token is ignored"
    # With the request's own token, that token (and only that) goes to the request's host.
    setup_and_wait(app, 4, hostname=fake_ls.url, access_token="request-token")
    assert fake_ls.seen and all(auth.endswith("request-token") for auth in fake_ls.authorizations())


def test_a_configured_url_wins_over_the_request_hostname(tmp_path: Path, fake_ls: FakeLabelStudio) -> None:
    app = create_app(fake_settings(tmp_path, label_studio_url=fake_ls.url, label_studio_api_key=ENV_KEY))
    fake_ls.known.add(3)
    with running_fake_ls() as attacker:
        confirmed = setup_and_wait(app, 3, hostname=attacker.url, access_token="request-token")
        unknown = setup_and_wait(app, 4, hostname=attacker.url)
    assert attacker.seen == []
    assert fake_ls.authorizations() and all(auth.endswith(ENV_KEY) for auth in fake_ls.authorizations())
    assert confirmed.confirmed() and not unknown.confirmed(), "Label Studio knows project 3, not 4"


# ---------------------------------------------------------------- item 5: bounded memory, no disk until confirmed


def test_registry_keeps_the_most_recently_used_projects_and_releases_the_rest(tmp_path: Path) -> None:
    app = fake_app(tmp_path, max_projects=3)
    registry: ModelRegistry = app.config["MODELS"]
    models = {pid: setup_and_wait(app, pid) for pid in (1, 2, 3)}
    setup_and_wait(app, 1)  # used again: now the most recent
    setup_and_wait(app, 4)
    assert sorted(m.project_id for m in registry.all()) == [1, 3, 4]
    setup_and_wait(app, 5)
    assert sorted(m.project_id for m in registry.all()) == [1, 4, 5]
    for pid in (2, 3):
        assert registry.known(pid) is None and models[pid].closed, "evicted, its threads released"
    assert not models[1].closed
    # A webhook that still holds an evicted model is answered, not crashed.
    annotation = {"task": {"id": 1, "data": {"text": "x"}}, "annotation": {"id": 1, "result": []}}
    assert models[2].fit("ANNOTATION_CREATED", annotation)["status"].startswith("skipped")
    # An evicted project comes back as a new model on its next /setup.
    assert setup_and_wait(app, 2) is not models[2]


def test_unconfirmed_projects_leave_nothing_on_disk(tmp_path: Path) -> None:
    app = fake_app(tmp_path)
    client = app.test_client()
    for pid in range(100, 120):
        assert client.post("/setup", json={"project": pid, "schema": CONFIG}).status_code == 200
        resp = client.post("/predict", json={"tasks": [{"id": 1, "data": {"text": "aspirin dose"}}], "project": pid,
                                             "label_config": CONFIG})
        (pred,) = resp.get_json()["results"][0]
        assert [r["value"]["text"] for r in pred["result"]] == ["aspirin"]
    assert not (tmp_path / "projects").exists()


def test_llm_labels_wait_in_memory_until_label_studio_confirms_the_project(tmp_path: Path,
                                                                            fake_ls: FakeLabelStudio) -> None:
    settings = fake_settings(tmp_path, label_studio_url=fake_ls.url, label_studio_api_key=ENV_KEY)
    app = create_app(settings, ModelRegistry(settings, runtime=Runtime(settings, client=FakeChat())))
    model = setup_and_wait(app, 3)  # Label Studio answers 404: not (yet) a project of it
    assert not model.confirmed()
    resp = app.test_client().post("/predict", json={"tasks": [{"id": 42, "data": {"text": "aspirin"}}],
                                                    "project": 3, "label_config": CONFIG})
    assert resp.status_code == 200 and resp.get_json()["results"][0]
    assert not (tmp_path / "projects").exists()
    fake_ls.known.add(3)
    model.reconfirm(min_interval_s=0)  # what the next /setup does once the retry interval has passed
    deadline = time.monotonic() + 15
    while not (model.confirmed() and model.llm_labels.all()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(model.llm_labels.all()) == [42], "the label that waited is written once confirmed"


# ---------------------------------------------------------------- item 7: no head-of-line blocking


def test_a_one_task_request_is_fast_while_a_bulk_request_runs(tmp_path: Path) -> None:
    chat = FakeChat(delay_s=0.02)
    app = fake_app(tmp_path, chat, llm_concurrency=2, llm_interactive_concurrency=1, interactive_max_tasks=8)
    setup_and_wait(app, 3)
    bulk = {"tasks": [{"id": i, "data": {"text": f"bulk text {i}"}} for i in range(1000)], "project": 3,
            "label_config": CONFIG}
    bulk_status: list[int] = []
    worker = threading.Thread(target=lambda: bulk_status.append(app.test_client().post("/predict", json=bulk)
                                                                .status_code))
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while chat.calls < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert chat.calls >= 4, "the bulk request is running"
        started = time.monotonic()
        resp = app.test_client().post("/predict", json={"tasks": [{"id": 5000, "data": {"text": "aspirin now"}}],
                                                        "project": 3, "label_config": CONFIG})
        elapsed = time.monotonic() - started
    finally:
        chat.release.set()  # the rest of the bulk request finishes at once
        worker.join(60)
    assert resp.status_code == 200 and resp.get_json()["results"][0]
    # One FIFO pool put it behind ~1,000 calls of 20 ms on 2 workers: about 10 s. Its own lane: one call.
    assert elapsed < 1.0, f"the 1-task request took {elapsed:.2f} s behind the bulk request"
    assert bulk_status == [200]
