"""LLMClient against a real local HTTP server: retries, Retry-After, json_schema fallback, secrecy."""

from __future__ import annotations

import logging
import socket
import time

import pytest
from annot_fakes import API_KEY, FakeLLM, reply, sleep_then, status

from backend.annotator.client import LLMCallError, LLMClient, entities_json_schema
from backend.metrics import Registry

MESSAGES = [{"role": "system", "content": "be an NER system"}, {"role": "user", "content": "Input: x\nOutput:"}]
SCHEMA = entities_json_schema(["Chemical", "Disease"])


def make_client(fake: FakeLLM, **kw: object) -> LLMClient:
    options: dict[str, object] = {"timeout": 2.0, "max_retries": 3, "backoff_base": 0.01, "backoff_max": 0.05}
    options.update(kw)
    return LLMClient(base_url=fake.url, api_key=API_KEY, model="fake-model", **options)  # type: ignore[arg-type]


def test_success_sends_temperature_zero_schema_and_returns_usage(fake_llm: FakeLLM) -> None:
    fake_llm.script = [reply('{"entities": []}', prompt_tokens=11, completion_tokens=7, model="fake-model-0613")]
    client = make_client(fake_llm)
    c = client.complete(MESSAGES, json_schema=SCHEMA)
    assert (c.content, c.prompt_tokens, c.completion_tokens, c.model) == ('{"entities": []}', 11, 7,
                                                                          "fake-model-0613")
    assert c.latency_s > 0 and c.attempts == 1 and c.structured
    body = fake_llm.requests[0]
    assert body["temperature"] == 0 and body["model"] == "fake-model" and body["messages"] == MESSAGES
    assert body["response_format"] == {"type": "json_schema", "json_schema": SCHEMA}
    assert fake_llm.headers[0]["Authorization"] == f"Bearer {API_KEY}"
    assert client.schema_supported is True
    assert client.stats["requests"] == 1 and client.stats.get("retries", 0) == 0


def test_429_then_200_is_retried_once(fake_llm: FakeLLM) -> None:
    fake_llm.script = [status(429), reply('{"entities": []}')]
    client = make_client(fake_llm)
    assert client.complete(MESSAGES).attempts == 2
    assert fake_llm.count == 2
    assert client.stats["retries"] == 1


def test_retry_after_header_is_honoured(fake_llm: FakeLLM) -> None:
    fake_llm.script = [status(429, headers={"Retry-After": "1"}), reply("[]")]
    client = make_client(fake_llm, backoff_max=5.0)
    started = time.monotonic()
    client.complete(MESSAGES)
    assert time.monotonic() - started >= 0.95  # our own backoff alone would be <= 0.01 s
    assert fake_llm.count == 2


def test_5xx_are_retried_then_succeed(fake_llm: FakeLLM) -> None:
    fake_llm.script = [status(500), status(502), status(503), reply("[]")]
    assert make_client(fake_llm).complete(MESSAGES).attempts == 4
    assert fake_llm.count == 4


def test_retries_are_bounded_and_reason_is_rate_limited(fake_llm: FakeLLM) -> None:
    fake_llm.default = status(429)
    client = make_client(fake_llm, max_retries=2)
    with pytest.raises(LLMCallError) as info:
        client.complete(MESSAGES)
    assert info.value.reason == "rate_limited" and info.value.status == 429 and info.value.attempts == 3
    assert fake_llm.count == 3  # one try + 2 retries; the openai client added none of its own
    assert client.stats["failures"] == 1


def test_timeout_is_retried_then_reported(fake_llm: FakeLLM) -> None:
    fake_llm.default = sleep_then(1.0, reply("[]"))
    client = make_client(fake_llm, timeout=0.25, max_retries=1)
    with pytest.raises(LLMCallError) as info:
        client.complete(MESSAGES)
    assert info.value.reason == "timeout" and info.value.attempts == 2
    assert fake_llm.count == 2


def test_connection_error_is_reported_as_connection() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = LLMClient(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, model="m", timeout=1.0,
                       max_retries=1, backoff_base=0.01)
    with pytest.raises(LLMCallError) as info:
        client.complete(MESSAGES)
    assert info.value.reason == "connection" and info.value.attempts == 2


def test_non_retryable_4xx_fails_at_once(fake_llm: FakeLLM) -> None:
    fake_llm.default = status(401, message="bad key")
    with pytest.raises(LLMCallError) as info:
        make_client(fake_llm).complete(MESSAGES)
    assert info.value.reason == "http_error" and info.value.status == 401
    assert fake_llm.count == 1


def test_schema_rejection_falls_back_and_is_remembered(fake_llm: FakeLLM) -> None:
    def server(body: dict) -> object:
        if "response_format" in body:
            return status(400, message="response_format json_schema is not supported")(body)
        return reply('{"entities": []}')(body)

    fake_llm.default = server
    client = make_client(fake_llm)
    first = client.complete(MESSAGES, json_schema=SCHEMA)
    assert not first.structured and fake_llm.count == 2
    assert client.schema_supported is False and client.stats["schema_fallbacks"] == 1
    client.complete(MESSAGES, json_schema=SCHEMA)
    assert fake_llm.count == 3  # the endpoint is not asked with json_schema again
    assert "response_format" not in fake_llm.requests[-1]


def test_a_400_that_is_not_about_the_schema_is_an_error_not_a_fallback(fake_llm: FakeLLM) -> None:
    fake_llm.default = status(400, message="context length exceeded")
    client = make_client(fake_llm)
    with pytest.raises(LLMCallError) as info:
        client.complete(MESSAGES, json_schema=SCHEMA)
    assert info.value.reason == "http_error" and info.value.status == 400
    assert fake_llm.count == 2  # with schema, then once plain; a 400 is not retried further
    assert client.schema_supported is None  # unknown still: the next call tries json_schema again


def test_after_schema_works_a_400_is_not_a_fallback(fake_llm: FakeLLM) -> None:
    fake_llm.script = [reply("[]"), status(400)]
    client = make_client(fake_llm)
    client.complete(MESSAGES, json_schema=SCHEMA)
    with pytest.raises(LLMCallError):
        client.complete(MESSAGES, json_schema=SCHEMA)
    assert fake_llm.count == 2 and client.schema_supported is True


def test_structured_output_can_be_disabled(fake_llm: FakeLLM) -> None:
    make_client(fake_llm, structured_output=False).complete(MESSAGES, json_schema=SCHEMA)
    assert "response_format" not in fake_llm.requests[0]


def test_api_key_never_in_errors_reprs_or_logs(fake_llm: FakeLLM, caplog: pytest.LogCaptureFixture) -> None:
    fake_llm.default = status(401, message=f"Incorrect API key provided: {API_KEY}")
    client = make_client(fake_llm, max_retries=0)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(LLMCallError) as info:
        client.complete(MESSAGES)
    assert API_KEY not in str(info.value) and API_KEY not in repr(info.value)
    assert API_KEY not in repr(client)
    assert API_KEY not in caplog.text
    assert "***" in str(info.value)


# ---------------------------------------------------------------------- one retry policy, counted (issue 12)


def test_retries_and_errors_are_counted_by_kind_and_status(fake_llm: FakeLLM) -> None:
    metrics = Registry()
    fake_llm.script = [status(429), status(503), status(500), reply("[]")]
    client = make_client(fake_llm, metrics=metrics)
    assert client.complete(MESSAGES).attempts == 4
    assert fake_llm.count == 4  # our loop only: the openai client retried nothing behind it
    get = metrics.get
    assert get("llmaaa_llm_errors_total", kind="rate_limited", status="429") == 1
    assert get("llmaaa_llm_errors_total", kind="server_error", status="503") == 1
    assert get("llmaaa_llm_retries_total", kind="server_error", status="500") == 1
    assert get("llmaaa_llm_retries_total", kind="rate_limited", status="429") == 1
    text = metrics.render()
    assert 'llmaaa_llm_retries_total{kind="server_error",status="503"} 1.0' in text


def test_a_final_failure_is_an_error_without_a_retry(fake_llm: FakeLLM) -> None:
    metrics = Registry()
    fake_llm.default = sleep_then(1.0, reply("[]"))
    client = make_client(fake_llm, timeout=0.25, max_retries=1, metrics=metrics)
    with pytest.raises(LLMCallError):
        client.complete(MESSAGES)
    assert metrics.get("llmaaa_llm_errors_total", kind="timeout", status="none") == 2
    assert metrics.get("llmaaa_llm_retries_total", kind="timeout", status="none") == 1
    fake_llm.default = status(401)
    with pytest.raises(LLMCallError):
        client.complete(MESSAGES)
    assert metrics.get("llmaaa_llm_errors_total", kind="http_error", status="401") == 1
    assert metrics.get("llmaaa_llm_retries_total", kind="http_error", status="401") == 0


def test_retry_after_is_capped_by_backoff_max(fake_llm: FakeLLM) -> None:
    fake_llm.script = [status(429, headers={"Retry-After": "3600"}), reply("[]")]
    started = time.monotonic()
    make_client(fake_llm, backoff_max=0.2).complete(MESSAGES)
    assert time.monotonic() - started < 5  # an hour asked for, backoff_max honoured


def test_finish_reason_is_returned(fake_llm: FakeLLM) -> None:
    fake_llm.script = [reply('{"entities": [', finish_reason="length")]
    assert make_client(fake_llm).complete(MESSAGES).finish_reason == "length"
