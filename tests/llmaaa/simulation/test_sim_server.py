"""The simulated OpenAI-compatible server: the real `openai` client, faults at their rates, the CLI."""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from collections import Counter
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from flask import Flask

from llmaaa.services import serve_in_thread
from llmaaa.simulation import server as server_mod
from llmaaa.simulation.cli import build_app, register
from llmaaa.simulation.server import FaultConfig, create_app
from llmaaa.simulation.teacher import SimulatedTeacher
from training.data import Example, load_split

SCHEMA = {"name": "ner_entities", "strict": True, "schema": {"type": "object", "properties": {}}}


@pytest.fixture(scope="module")
def dev(bc5cdr_dir: Path) -> list[Example]:
    return load_split(bc5cdr_dir / "dev.jsonl", limit=200)


@pytest.fixture(scope="module")
def teacher(dev: list[Example]) -> SimulatedTeacher:
    return SimulatedTeacher(dev, noise=0.0, seed=1)


def serving(app: Flask) -> AbstractContextManager[str]:
    """The app on an ephemeral port, threaded like `llmaaa fake-llm`; yields the /v1 base URL."""
    return serve_in_thread(app, "/v1")


def prompt(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a NER system."},
            {"role": "user", "content": f"Input: {text}\nOutput:"}]


def gold_reply(ex: Example) -> dict[str, Any]:
    return {"entities": [{"span": ex.text[s.start : s.end], "type": s.label} for s in sorted(ex.spans)]}


def test_openai_client_gets_gold_answers_usage_and_models(teacher: SimulatedTeacher, dev: list[Example]) -> None:
    with serving(create_app(teacher, api_key="sk-sim")) as url:
        client = openai.OpenAI(base_url=url, api_key="sk-sim", max_retries=0, timeout=10)
        for ex in dev[:5]:
            resp = client.chat.completions.create(model="gpt-4o-mini", messages=prompt(ex.text), temperature=0,
                                                  response_format={"type": "json_schema", "json_schema": SCHEMA})
            assert resp.object == "chat.completion" and resp.model == "gpt-4o-mini"
            choice = resp.choices[0]
            assert choice.finish_reason == "stop" and choice.message.role == "assistant"
            assert json.loads(choice.message.content or "") == gold_reply(ex)
            assert resp.usage is not None and resp.usage.prompt_tokens > 10 and resp.usage.completion_tokens > 0
            assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
        models = client.models.list().data
        assert [(m.id, m.owned_by) for m in models] == [("simulated-llm", "llmaaa-simulation")]
        assert client.models.retrieve("simulated-llm").id == "simulated-llm"

        for bad_key in ("wrong", ""):
            bad = openai.OpenAI(base_url=url, api_key=bad_key or "x", max_retries=0, timeout=10)
            with pytest.raises(openai.AuthenticationError) as err:
                bad.chat.completions.create(model="m", messages=prompt(dev[0].text))
            assert err.value.code == "invalid_api_key"
        assert httpx.post(f"{url}/chat/completions", json={"model": "m", "messages": prompt("x")}).status_code == 401
        stats = httpx.get(f"{url}/simulation/stats").json()
        assert stats["simulation"] is True and stats["counters"]["answered"] == 5
        assert stats["counters"]["unauthorized"] == 3


def test_no_json_schema_flag_rejects_structured_output(teacher: SimulatedTeacher, dev: list[Example]) -> None:
    with serving(create_app(teacher, json_schema=False)) as url:
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=10)
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="m", messages=prompt(dev[0].text),
                                           response_format={"type": "json_schema", "json_schema": SCHEMA})
        assert err.value.status_code == 400 and err.value.param == "response_format"
        for fmt in ({"type": "json_object"}, None):
            kwargs: dict[str, Any] = {"response_format": fmt} if fmt else {}
            resp = client.chat.completions.create(model="m", messages=prompt(dev[0].text), **kwargs)
            assert json.loads(resp.choices[0].message.content or "") == gold_reply(dev[0])
        assert httpx.get(f"{url}/simulation/stats").json()["counters"]["rejected_json_schema"] == 1


def test_unknown_text_gets_no_entities_and_a_warning(teacher: SimulatedTeacher,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    client = create_app(teacher).test_client()
    with caplog.at_level(logging.WARNING, logger="llmaaa.simulation.server"):
        resp = client.post("/v1/chat/completions", json={"model": "m", "messages": prompt("never seen text")})
        unreadable = client.post("/v1/chat/completions",
                                 json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == unreadable.status_code == 200
    assert json.loads(resp.get_json()["choices"][0]["message"]["content"]) == {"entities": []}
    assert "unknown text" in caplog.text and "never seen text" in caplog.text
    counters = client.get("/v1/simulation/stats").get_json()["counters"]
    assert counters["unknown_text"] == 1 and counters["unreadable_prompt"] == 1
    assert client.post("/v1/chat/completions", json={"model": "m"}).status_code == 400
    assert client.post("/v1/chat/completions",
                       json={"model": "m", "messages": prompt("x"), "stream": True}).status_code == 400


def classify(content: str) -> str:
    """Which kind of reply: the server's malformations are distinguishable by shape."""
    if content.startswith("```json"):
        return "code_fence"
    try:
        json.loads(content)
        return "ok"
    except ValueError:
        pass
    if content.startswith("{"):
        return "truncated"
    return "prose_json" if "{" in content else "no_json"


def test_faults_appear_at_their_configured_rates(teacher: SimulatedTeacher, dev: list[Example]) -> None:
    sleeps: list[float] = []
    n, fail, bad = 1000, 0.3, 0.4
    faults = FaultConfig(fail_rate=fail, malformed_rate=bad, hang_s=33.0, latency_ms=5, retry_after_s=2, seed=4)
    client = create_app(teacher, faults, sleep=sleeps.append).test_client()
    seen: Counter[str] = Counter()
    for i in range(n):
        resp = client.post("/v1/chat/completions",
                           json={"model": "m", "messages": prompt(dev[i % len(dev)].text)})
        if resp.status_code == 429:
            assert resp.headers["Retry-After"] == "2"
            assert resp.get_json()["error"]["code"] == "rate_limit_exceeded"
            seen["rate_limited"] += 1
        elif resp.status_code == 500:
            assert resp.get_json()["error"]["type"] == "server_error"
            seen["server_error"] += 1
        else:
            assert resp.status_code == 200
            choice = resp.get_json()["choices"][0]
            kind = classify(choice["message"]["content"])
            seen[kind] += 1
            assert (choice["finish_reason"] == "length") == (kind == "truncated")
    seen["hang"] = sum(s > 30 for s in sleeps)
    assert all(s >= 0.005 for s in sleeps) and len(sleeps) == n - seen["rate_limited"]  # latency, not on 429

    def near(count: int, p: float, trials: int) -> bool:
        return abs(count - p * trials) <= 4.5 * (p * (1 - p) * trials) ** 0.5 + 1

    expected_fail = dict(server_mod.FAIL_SPLIT)
    for kind, share in expected_fail.items():
        assert near(seen[kind], fail * share, n), (kind, seen)
    answered = n - seen["rate_limited"] - seen["server_error"]
    for kind, share in dict(server_mod.MALFORMED_SPLIT).items():
        assert near(seen[kind], bad * share, answered), (kind, seen)
    counters = client.get("/v1/simulation/stats").get_json()["counters"]
    assert counters["fault_rate_limited"] == seen["rate_limited"]
    assert counters["fault_server_error"] == seen["server_error"]
    assert counters["fault_hang"] == seen["hang"]
    assert counters["requests"] == n and counters["answered"] == answered


def test_faults_are_per_request_so_a_retry_can_succeed(teacher: SimulatedTeacher, dev: list[Example]) -> None:
    client = create_app(teacher, FaultConfig(fail_rate=0.5, malformed_rate=0.5), sleep=lambda s: None).test_client()
    body = {"model": "m", "messages": prompt(dev[3].text)}
    statuses = [client.post("/v1/chat/completions", json=body).status_code for _ in range(40)]
    assert 200 in statuses and {429, 500} & set(statuses)
    replies = [client.post("/v1/chat/completions", json=body).get_json() for _ in range(60)]
    contents = {r["choices"][0]["message"]["content"] for r in replies if "choices" in r}
    assert json.dumps(gold_reply(dev[3]), ensure_ascii=False) in contents and len(contents) > 1


def test_fault_rates_follow_noise_unless_given() -> None:
    assert FaultConfig.for_noise(0.0) == FaultConfig()
    cfg = FaultConfig.for_noise(0.5)
    assert (cfg.fail_rate, cfg.malformed_rate) == pytest.approx((0.025, 0.05))
    cfg = FaultConfig.for_noise(0.5, fail_rate=0.0, malformed_rate=1.0, hang_s=2)
    assert (cfg.fail_rate, cfg.malformed_rate, cfg.hang_s) == (0.0, 1.0, 2)
    with pytest.raises(ValueError):
        FaultConfig(fail_rate=1.5)


def test_a_hang_trips_the_client_timeout(teacher: SimulatedTeacher, dev: list[Example],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_mod, "FAIL_SPLIT", (("hang", 1.0),))
    with serving(create_app(teacher, FaultConfig(fail_rate=1.0, hang_s=2.0))) as url:
        client = openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(model="m", messages=prompt(dev[0].text))
        assert time.monotonic() - started < 1.5


def test_concurrent_requests_are_served_concurrently(teacher: SimulatedTeacher, dev: list[Example]) -> None:
    """Overlap as the server sees it (requests inside their latency at once), not wall time: robust on a
    loaded machine, and 1 if requests were served one after another."""
    n = 16
    lock, inside, most = threading.Lock(), [0], [0]

    def sleep(seconds: float) -> None:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(seconds)
        with lock:
            inside[0] -= 1

    with serving(create_app(teacher, FaultConfig(latency_ms=500), sleep=sleep)) as url:
        results: list[int] = []

        def ask(i: int) -> None:
            body = {"model": "m", "messages": prompt(dev[i].text)}
            results.append(httpx.post(f"{url}/chat/completions", json=body, timeout=30).status_code)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == [200] * n
    assert most[0] >= 4, f"at most {most[0]} requests were in flight at once"


def test_max_tokens_cuts_the_reply(teacher: SimulatedTeacher, dev: list[Example]) -> None:
    ex = next(e for e in dev if len(e.spans) >= 3)
    client = create_app(teacher).test_client()
    choice = client.post("/v1/chat/completions", json={"model": "m", "messages": prompt(ex.text),
                                                       "max_tokens": 5}).get_json()["choices"][0]
    assert choice["finish_reason"] == "length" and len(choice["message"]["content"]) == 20


def test_cli_builds_the_configured_app(tmp_path: Path, bc5cdr_dir: Path) -> None:
    (tmp_path / "dev.jsonl").write_text(
        "".join((bc5cdr_dir / "dev.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:20]))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["fake-llm", "--data", str(tmp_path), "--port", "0", "--noise", "0.4",
                              "--no-json-schema", "--api-key", "k", "--fail-rate", "0", "--seed", "9"])
    assert callable(args.func)
    client = build_app(args).test_client()
    stats = client.get("/v1/simulation/stats").get_json()
    assert stats["known_texts"] == 20 and stats["noise"] == 0.4 and stats["seed"] == 9
    assert stats["faults"]["fail_rate"] == 0.0 and stats["faults"]["malformed_rate"] == pytest.approx(0.04)
    auth = {"Authorization": "Bearer k"}
    assert client.get("/v1/models").status_code == 401 and client.get("/v1/models", headers=auth).status_code == 200
    assert client.get("/health").status_code == 200
    body = {"model": "m", "messages": prompt("x"),
            "response_format": {"type": "json_schema", "json_schema": SCHEMA}}
    assert client.post("/v1/chat/completions", json=body, headers=auth).status_code == 400


@pytest.mark.parametrize("u", [0.0, 0.37, 0.99])
def test_malformed_kinds_are_as_recoverable_as_documented(u: float) -> None:
    parsing = pytest.importorskip("backend.annotator.parsing")
    for content in ('{"entities": []}', json.dumps({"entities": [{"span": "aspirin", "type": "Chemical"},
                                                                 {"span": "pain", "type": "Disease"}]})):
        expected = [(e["span"], e["type"]) for e in json.loads(content)["entities"]]
        for kind in ("prose_json", "code_fence"):
            assert parsing.parse_reply(server_mod.malform(content, kind, u)) == expected
        for kind in ("truncated", "no_json"):
            with pytest.raises(parsing.MalformedReplyError):
                parsing.parse_reply(server_mod.malform(content, kind, u))
