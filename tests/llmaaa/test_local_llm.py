"""`llmaaa local-llm`: prompt rendering, the HTTP surface and admission control on a scripted engine;
the real Gemma 3 270M (marker `llm`) only where `make install-llm` has installed it."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from backend.annotator import Demo, PromptTemplate
from backend.labeling_config import LabelSpec
from llmaaa import local_llm
from llmaaa.local_llm import EnginePool, Generation, create_app, render_completion
from llmaaa.services import serve_in_thread
from llmaaa.simulation.teacher import parse_prompt
from training.spans import Span

LABELS = [LabelSpec("Chemical", "a chemical or drug"), LabelSpec("Disease", "a disease")]


class ScriptedEngine:
    """Answers with a fixed reply; records its calls; can be held busy until released."""

    def __init__(self, reply: str = '{"entities": []}', finish: str = "stop") -> None:
        self.reply, self.finish = reply, finish
        self.calls: list[dict[str, Any]] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Semaphore(0)

    def generate(self, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> Generation:
        self.calls.append({"messages": list(messages), **kwargs})
        self.entered.release()
        self.release.wait(10)
        return Generation(self.reply, prompt_tokens=11, completion_tokens=7, finish_reason=self.finish)


def test_completion_rendering_keeps_the_demonstrations_and_ends_at_output() -> None:
    demos = [Demo("Aspirin helps.", [Span(0, 7, "Chemical")]), Demo("No entity here.", [])]
    messages = PromptTemplate.load("ner", "v1").render(LABELS, demos, "Cocaine causes seizures.")
    prompt = render_completion(messages)
    assert prompt.startswith(messages[0]["content"])  # the instructions come first, verbatim
    assert prompt.endswith("Input: Cocaine causes seizures.\nOutput:")
    # The simulated LLM's reader of the prompt contract finds the same query and demos in the plain prompt.
    user_part = prompt.removeprefix(messages[0]["content"] + "\n\n")
    assert user_part == messages[1]["content"]
    query, read = parse_prompt([{"role": "user", "content": user_part}])
    assert query == "Cocaine causes seizures."
    assert read == [("Aspirin helps.", demos[0].output()), ("No entity here.", demos[1].output())]


def test_completion_rendering_puts_an_assistant_turn_after_its_output_mark() -> None:
    prompt = render_completion([{"role": "system", "content": "S"},
                                {"role": "user", "content": "Input: a\nOutput:"},
                                {"role": "assistant", "content": "{}"},
                                {"role": "user", "content": "Input: b\nOutput:"}])
    assert prompt == "S\n\nInput: a\nOutput: {}\n\nInput: b\nOutput:"


def test_openai_client_round_trip_with_schema_and_token_cap() -> None:
    engine = ScriptedEngine('{"entities": [{"span": "aspirin", "type": "Chemical"}]}')
    app = create_app(EnginePool([engine]), "gemma-test", max_tokens_cap=64)
    with serve_in_thread(app, "/v1") as url:
        client = openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=10)
        assert [m.id for m in client.models.list().data] == ["gemma-test"]
        schema = {"type": "object", "properties": {"entities": {"type": "array"}}}
        resp = client.chat.completions.create(
            model="anything", messages=[{"role": "user", "content": "Input: aspirin\nOutput:"}], temperature=0,
            max_tokens=1000, response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}})
        assert resp.model == "gemma-test"
        assert json.loads(resp.choices[0].message.content)["entities"][0]["span"] == "aspirin"
        assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (11, 7)
        call = engine.calls[-1]
        assert call["json_schema"] == schema and call["max_tokens"] == 64  # capped at the server's limit
        assert call["temperature"] == 0
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="m", messages=[])
        stats = httpx.get(url + "/local/stats").json()
        assert stats["completions"] == 1 and stats["prompt_tokens"] == 11


def test_a_cut_off_reply_says_length() -> None:
    engine = ScriptedEngine('{"entities": [{"span": "asp', finish="length")
    with serve_in_thread(create_app(EnginePool([engine]), "m"), "/v1") as url:
        body = httpx.post(url + "/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}).json()
        assert body["choices"][0]["finish_reason"] == "length"


def test_saturated_server_queues_then_answers_429_with_retry_after() -> None:
    engine = ScriptedEngine()
    engine.release.clear()
    pool = EnginePool([engine], max_queue=1)
    results: list[int] = []
    body = {"messages": [{"role": "user", "content": "Input: x\nOutput:"}]}
    with serve_in_thread(create_app(pool, "m", retry_after_s=3), "/v1") as url:
        def call() -> None:
            results.append(httpx.post(url + "/chat/completions", json=body, timeout=20).status_code)

        first = threading.Thread(target=call)
        first.start()
        assert engine.entered.acquire(timeout=10)  # the only instance is now busy
        second = threading.Thread(target=call)
        second.start()
        deadline = time.monotonic() + 10
        while pool.snapshot()["waiting"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pool.snapshot()["waiting"] == 1  # queued, not refused
        third = httpx.post(url + "/chat/completions", json=body, timeout=10)
        assert third.status_code == 429 and third.headers["Retry-After"] == "3"
        engine.release.set()
        first.join(10)
        second.join(10)
    assert sorted(results) == [200, 200]
    assert pool.snapshot()["rejected"] == 1 and len(engine.calls) == 2


def test_pool_serves_waiting_requests_in_arrival_order() -> None:
    engine = ScriptedEngine()
    engine.release.clear()
    pool = EnginePool([engine], max_queue=8)
    order: list[int] = []

    def use(i: int) -> None:
        with pool.engine():
            order.append(i)
            engine.release.wait(10)

    threads = [threading.Thread(target=use, args=(0,))]
    threads[0].start()
    while pool.snapshot()["busy"] < 1:
        time.sleep(0.005)
    for i in range(1, 5):
        threads.append(threading.Thread(target=use, args=(i,)))
        threads[-1].start()
        while pool.snapshot()["waiting"] < i:
            time.sleep(0.005)
    engine.release.set()
    for t in threads:
        t.join(10)
    assert order == [0, 1, 2, 3, 4]


def _args(**kw: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    local_llm.register(parser.add_subparsers())
    return parser.parse_args(["local-llm", *[f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]])


def test_missing_llama_cpp_exits_2_naming_make_install_llm(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import fails as if not installed
    assert local_llm.run(_args(port=0)) == 2
    assert "make install-llm" in capsys.readouterr().err


def test_missing_model_file_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                    tmp_path: Path) -> None:
    monkeypatch.setattr(local_llm, "import_llama_cpp", lambda: object())
    assert local_llm.run(_args(port=0, model_path=tmp_path / "none.gguf")) == 2
    assert "none.gguf not found" in capsys.readouterr().err


def test_missing_model_package_names_make_install_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(local_llm.MODEL_ENV, raising=False)
    monkeypatch.setitem(sys.modules, local_llm.MODEL_PACKAGE, None)
    with pytest.raises(local_llm.LocalLLMUnavailable, match="make install-llm"):
        local_llm.resolve_model_path(None)


# ------------------------------------------------------------------------------ the real model

# Skipped where the extra `llm` is absent, failed in CI: tests/conftest.py decides, for every `llm` test.

@pytest.fixture(scope="module")
def real_pool() -> Any:
    path = local_llm.resolve_model_path(None)
    # One thread: on a shared machine llama.cpp's threads wait on each other (docs/local-llm.md).
    pool, info = local_llm.load_pool(path, concurrency=1, threads=1, n_ctx=4096, prompt_format="auto", max_queue=4)
    return pool, info


@pytest.mark.llm
def test_real_base_model_is_served_as_completion_and_answers_json_under_the_schema(real_pool: Any) -> None:
    pool, info = real_pool
    # The packaged model is the pretrained base: no chat template in the GGUF, so the plain completion path.
    assert not info["has_chat_template"] and info["prompt_format"] == "completion"
    messages = PromptTemplate.load("ner", "v1").render(
        LABELS, [Demo("Aspirin helps.", [Span(0, 7, "Chemical")])], "Cocaine causes seizures.")
    schema = {"type": "object", "properties": {"entities": {"type": "array", "items": {
        "type": "object", "properties": {"span": {"type": "string"}, "type": {"type": "string",
                                                                            "enum": ["Chemical", "Disease"]}},
        "required": ["span", "type"], "additionalProperties": False}}}, "required": ["entities"],
        "additionalProperties": False}
    with pool.engine() as engine:
        gen = engine.generate(messages, max_tokens=96, temperature=0.0, top_p=1.0, seed=None, stop=[],
                              json_schema=schema, json_object=False)
    reply = json.loads(gen.text)  # constrained decoding: always valid JSON of the schema's shape
    assert isinstance(reply["entities"], list)
    assert all(e["type"] in ("Chemical", "Disease") for e in reply["entities"])
    assert gen.prompt_tokens > 50 and gen.completion_tokens > 0


def test_repetition_guard_stops_a_loop_of_generated_tokens_only() -> None:
    from llmaaa.local_llm import RepetitionGuard

    prompt = [7, 8, 9, 10] * 5  # the prompt may repeat itself: only generated tokens count
    guard = RepetitionGuard()
    assert not guard(prompt + [1], None)
    item = [20, 21, 22, 23, 24]
    assert not guard(prompt + [1] + item * 2, None)  # an entity named twice is no loop
    assert guard(prompt + [1] + item * 3, None) and guard.fired
