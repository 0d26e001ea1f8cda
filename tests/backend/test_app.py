"""The ML-backend protocol through Flask's test client, against the simulated LLM over real HTTP."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_fakes import fake_app
from flask.testing import FlaskClient

from backend.app import create_app
from backend.labeling_config import LabelSpec, build_label_config
from backend.metrics import REGISTRY
from backend.model import NERBackendModel
from backend.settings import Settings
from llmaaa.services import serve_in_thread
from llmaaa.simulation.server import FaultConfig
from llmaaa.simulation.server import create_app as create_sim_app
from llmaaa.simulation.teacher import SimulatedTeacher
from training.data import Example, load_split

CONFIG = build_label_config([LabelSpec("Chemical", "a drug or chemical"), LabelSpec("Disease", "a disease")])


@pytest.fixture(scope="module")
def dev_examples(bc5cdr_dir: Path) -> list[Example]:
    return [ex for ex in load_split(bc5cdr_dir / "dev.jsonl", limit=60) if ex.spans][:8]


def serve(app: Any) -> Iterator[str]:
    with serve_in_thread(app, "/v1") as url:
        yield url


@pytest.fixture(scope="module")
def llm_url(dev_examples: list[Example]) -> Iterator[str]:
    yield from serve(create_sim_app(SimulatedTeacher(dev_examples, noise=0.0)))


@pytest.fixture(scope="module")
def failing_llm_url(dev_examples: list[Example]) -> Iterator[str]:
    faults = FaultConfig(fail_rate=1.0, hang_s=3.0, retry_after_s=0.0)
    yield from serve(create_sim_app(SimulatedTeacher(dev_examples, noise=0.0), faults))


def make_client(tmp_path: Path, llm_url: str, **overrides: Any) -> FlaskClient:
    settings = Settings(llmaaa_data_dir=tmp_path, openai_base_url=llm_url, openai_api_key="sk-unit-secret",
                        llm_model="sim", llm_timeout_s=2.0, llm_max_retries=1, label_studio_url=None, redis_url="",
                        **overrides)
    return create_app(settings).test_client()


def task(tid: int, text: str | None) -> dict[str, Any]:
    return {"id": tid, "data": {"text": text} if text is not None else {}, "project": 3}


def test_setup_then_predict_one_entry_per_task_in_order(tmp_path: Path, llm_url: str,
                                                        dev_examples: list[Example]) -> None:
    client = make_client(tmp_path, llm_url)
    version = client.post("/setup", json={"project": "3.1700000000", "schema": CONFIG}).get_json()["model_version"]
    assert version == "llm-sim-ner.v2"
    texts = [ex.text for ex in dev_examples[:3]]
    tasks = [task(10, texts[0]), task(11, None), task(12, texts[1]), task(13, texts[2])]
    body = client.post("/predict", json={"tasks": tasks, "project": "3.1700000000", "label_config": CONFIG})
    results = body.get_json()["results"]
    assert len(results) == 4
    assert results[1] == [], "a task without text gets no prediction, and keeps its place"
    for entry, ex in zip([results[0], results[2], results[3]], dev_examples[:3], strict=True):
        (pred,) = entry
        assert pred["model_version"] == version
        got = {(r["value"]["start"], r["value"]["end"], r["value"]["labels"][0]) for r in pred["result"]}
        assert {(s.start, s.end, s.label) for s in ex.spans} <= got  # every gold span, on the right task
        assert all(r["value"]["text"] == ex.text[r["value"]["start"]:r["value"]["end"]] for r in pred["result"])
        assert 0.0 <= pred["score"] <= 1.0
    assert client.get("/versions").get_json() == {"versions": [version]}


def test_failed_llm_calls_give_empty_entries_not_empty_predictions(tmp_path: Path, failing_llm_url: str,
                                                                   dev_examples: list[Example]) -> None:
    client = make_client(tmp_path, failing_llm_url)
    before = REGISTRY.get("llmaaa_predict_tasks_total", outcome="not_annotated")
    tasks = [task(1, dev_examples[0].text), task(2, dev_examples[1].text)]
    body = client.post("/predict", json={"tasks": tasks, "project": 3, "label_config": CONFIG}).get_json()
    assert body["results"] == [[], []]
    assert REGISTRY.get("llmaaa_predict_tasks_total", outcome="not_annotated") == before + 2
    assert "llmaaa_not_annotated_total" in client.get("/metrics").get_data(as_text=True)


@pytest.mark.parametrize("payload, message", [
    ({"project": {"id": 3}}, "action"),
    ({"action": "SOMETHING_ELSE", "project": {"id": 3}}, "action"),
    ({"action": "ANNOTATION_CREATED", "project": {"id": 3}}, "annotation"),
    ({"action": "ANNOTATION_CREATED", "project": "nope", "annotation": {}, "task": {}}, "project"),
    ({"action": "ANNOTATIONS_DELETED", "project": {"id": 3}}, "annotations"),
])
def test_bad_webhooks_get_400_with_a_reason(tmp_path: Path, llm_url: str, payload: dict[str, Any],
                                            message: str) -> None:
    resp = make_client(tmp_path, llm_url).post("/webhook", json=payload)
    assert resp.status_code == 400
    assert message in resp.get_json()["error"]


def test_non_json_bodies_are_rejected(tmp_path: Path, llm_url: str) -> None:
    client = make_client(tmp_path, llm_url)
    for path in ("/setup", "/predict", "/webhook"):
        resp = client.post(path, data="not json", content_type="text/plain")
        assert resp.status_code == 400


def test_webhook_records_verified_task_as_demo(tmp_path: Path, llm_url: str, dev_examples: list[Example]) -> None:
    client = make_client(tmp_path, llm_url)
    client.post("/setup", json={"project": "3.1", "schema": CONFIG})
    ex = dev_examples[0]
    result = [{"from_name": "label", "to_name": "text", "type": "labels",
               "value": {"start": s.start, "end": s.end, "text": ex.text[s.start:s.end], "labels": [s.label]}}
              for s in ex.spans]
    payload = {"action": "ANNOTATION_CREATED", "project": {"id": 3, "label_config": CONFIG},
               "task": {"id": 99, "data": {"text": ex.text}}, "annotation": {"id": 5, "result": result}}
    resp = client.post("/webhook", json=payload)
    assert resp.status_code == 200 and resp.get_json()["retrain"] == {"enabled": False}
    model = client.application.config["MODELS"].known(3)
    model.flush_updates(timeout=60)  # the update runs off the request thread
    assert len(model.demos) == 1
    (demo,) = model.demos.nearest("anything at all", 1)
    assert demo.text == ex.text and sorted(demo.spans) == sorted(ex.spans)


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth_and_webhook_secret(tmp_path: Path, llm_url: str) -> None:
    client = make_client(tmp_path, llm_url, basic_auth_user="ls", basic_auth_pass="pw", webhook_secret="s3cret")
    assert client.get("/health").status_code == 200  # liveness stays open
    assert client.post("/setup", json={"project": "3.1", "schema": CONFIG}).status_code == 401
    assert client.post("/setup", json={"project": "3.1", "schema": CONFIG},
                       headers=_basic("ls", "wrong")).status_code == 401
    assert client.post("/setup", json={"project": "3.1", "schema": CONFIG},
                       headers=_basic("ls", "pw")).status_code == 200
    assert client.get("/metrics").status_code == 401
    event = {"action": "START_TRAINING", "project": {"id": 3}}
    assert client.post("/webhook", json=event).status_code == 401
    assert client.post("/webhook", json=event, headers={"X-Llmaaa-Secret": "wrong"}).status_code == 401
    assert client.post("/webhook", json=event, headers={"X-Llmaaa-Secret": "s3cret"}).status_code == 200
    assert client.post("/webhook", json=event, headers=_basic("ls", "pw")).status_code == 200


def test_secrets_never_appear_in_settings_repr_or_logs(tmp_path: Path, llm_url: str,
                                                       caplog: pytest.LogCaptureFixture,
                                                       dev_examples: list[Example]) -> None:
    settings = Settings(openai_api_key="sk-unit-secret", basic_auth_pass="pw-secret", webhook_secret="hook-secret")
    assert "sk-unit-secret" not in repr(settings) and "hook-secret" not in str(settings.model_dump())
    client = make_client(tmp_path, llm_url)
    with caplog.at_level("DEBUG"):
        client.post("/setup", json={"project": "3.1", "schema": CONFIG})
        client.post("/predict", json={"tasks": [task(1, dev_examples[0].text)], "project": 3})
    assert "sk-unit-secret" not in caplog.text


# ---------------------------------------------------------------- malformed requests (issue 12, items 3 and 4)


@pytest.fixture
def fake_client(tmp_path: Path) -> FlaskClient:
    return fake_app(tmp_path).test_client()


@pytest.mark.parametrize("path, payload, word", [
    ("/predict", {"tasks": [{"id": 1, "data": ["a text"]}], "project": 3, "label_config": CONFIG}, "data"),
    ("/predict", {"tasks": [task(1, "x")], "project": 3, "label_config": CONFIG, "params": "x"}, "params"),
    ("/predict", {"tasks": [task(1, "x")], "project": 3, "label_config": CONFIG, "params": {"context": 1}},
     "context"),
    ("/predict", {"tasks": [task(1, "x")], "project": 3, "label_config": 5}, "label_config"),
    ("/predict", {"tasks": [task(1, "x")], "project": 3, "label_config": "<View/>"}, "labeling config"),
    ("/setup", {"project": "3.1", "schema": "<View><Text name='t' value='$text'/></View>"}, "labeling config"),
    ("/webhook", {"action": "START_TRAINING", "project": 60}, "project"),
    ("/webhook", {"action": "START_TRAINING", "project": "60.1"}, "project"),
    ("/webhook", {"action": "START_TRAINING", "project": {"id": 60, "label_config": "<View/>"}}, "labeling config"),
    ("/webhook", {"action": "START_TRAINING", "project": {"id": 60, "label_config": 5}}, "label_config"),
    ("/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": 60, "label_config": CONFIG},
                  "task": {"id": 1, "data": []}, "annotation": {"id": 2}}, "task.data"),
])
def test_malformed_requests_get_a_json_4xx_naming_the_problem(fake_client: FlaskClient, path: str,
                                                              payload: dict[str, Any], word: str) -> None:
    resp = fake_client.post(path, json=payload)
    assert resp.status_code == 400, resp.get_data(as_text=True)[:300]
    assert word in resp.get_json()["error"]


@pytest.mark.parametrize("project", [True, -5, 0, 10**300, "\u0663\u0664", 3.0, "60.1x"],
                         ids=["true", "-5", "0", "10**300", "arabic-indic", "3.0", "60.1x"])
def test_bad_project_ids_are_refused_and_create_nothing(tmp_path: Path, fake_client: FlaskClient,
                                                        project: Any) -> None:
    assert fake_client.post("/setup", json={"project": project, "schema": CONFIG}).status_code == 400
    resp = fake_client.post("/predict", json={"tasks": [task(1, "aspirin")], "project": project,
                                              "label_config": CONFIG})
    assert resp.status_code == 400 and "project" in resp.get_json()["error"]
    resp = fake_client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": project}})
    assert resp.status_code == 400 and "project" in resp.get_json()["error"]
    assert not (tmp_path / "projects").exists()
    assert fake_client.application.config["MODELS"].all() == []


def test_too_many_tasks_get_a_413_with_the_limit(tmp_path: Path) -> None:
    client = fake_app(tmp_path, max_tasks_per_request=5).test_client()
    resp = client.post("/predict", json={"tasks": [task(i, "x") for i in range(6)], "project": 3,
                                         "label_config": CONFIG})
    assert resp.status_code == 413 and "limit is 5" in resp.get_json()["error"]
    ok = client.post("/predict", json={"tasks": [task(i, "aspirin") for i in range(5)], "project": 3,
                                       "label_config": CONFIG})
    assert ok.status_code == 200 and len(ok.get_json()["results"]) == 5


def test_unexpected_errors_and_unknown_routes_answer_json(fake_client: FlaskClient,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(NERBackendModel, "predict", boom)
    resp = fake_client.post("/predict", json={"tasks": [task(1, "x")], "project": 3, "label_config": CONFIG})
    assert resp.status_code == 500 and resp.is_json and "RuntimeError" in resp.get_json()["error"]
    assert "a bug" not in resp.get_json()["error"], "details stay in the log"
    for method, path, code in [("get", "/nowhere", 404), ("get", "/predict", 405)]:
        resp = getattr(fake_client, method)(path)
        assert resp.status_code == code and resp.is_json and resp.get_json()["error"]
    assert fake_client.get("/health").status_code == 200


def test_start_training_queues_only_for_a_valid_project_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import backend.jobs as jobs

    queued: list[tuple[int, str]] = []

    class RecordingScheduler:
        def __init__(self, *args: Any) -> None:
            pass

        def on_event(self, project_id: int, action: str) -> jobs.EnqueueResult:
            queued.append((project_id, action))
            return jobs.EnqueueResult(True, "job-1", "queued", 0)

    monkeypatch.setattr(jobs, "RetrainScheduler", RecordingScheduler)
    client = fake_app(tmp_path, redis_url="redis://127.0.0.1:1/0").test_client()
    for bad in (10**300, True, -1, "\u0663"):
        resp = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": bad}})
        assert resp.status_code == 400 and "project" in resp.get_json()["error"]
    resp = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 7}})
    assert resp.status_code == 200 and resp.get_json()["retrain"]["queued"] is True
    assert queued == [(7, "START_TRAINING")], "no job for an id that is not a project id"
