"""LLMAnnotator end to end against the local fake LLM server: cache, ledger, demos and the failure rule."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from annot_fakes import API_KEY, FakeEmbedder, FakeLLM, completion_body, query_of, reply, sleep_then, status

from backend.annotator.annotator import LLMAnnotator
from backend.annotator.cache import ReplyCache
from backend.annotator.client import LLMClient
from backend.annotator.demos import DemoIndex
from backend.annotator.ledger import CostLedger
from backend.annotator.prompt import PromptTemplate
from backend.labeling_config import LabelSchema
from training.spans import Span

LEXICON = {"aspirin": "Chemical", "cocaine": "Chemical", "headache": "Disease", "seizures": "Disease"}


def lexicon_llm(body: dict[str, Any]) -> dict[str, Any]:
    """Answers the query's lexicon words (as the architecture's prompt contract locates the query)."""
    words = [w.strip(".,;") for w in query_of(body).split()]
    entities = [{"span": w, "type": LEXICON[w]} for w in words if w in LEXICON]
    return completion_body(json.dumps({"entities": entities}), prompt_tokens=1000, completion_tokens=100)


@pytest.fixture
def make(tmp_path: Path, fake_llm: FakeLLM, schema: LabelSchema):  # type: ignore[no-untyped-def]
    fake_llm.default = lexicon_llm

    def build(demo_index: DemoIndex | None = None, template: PromptTemplate | None = None,
              max_chars: int = 20_000, **client_kw: Any) -> LLMAnnotator:
        options: dict[str, Any] = {"timeout": 2.0, "max_retries": 1, "backoff_base": 0.01}
        options.update(client_kw)
        client = LLMClient(base_url=fake_llm.url, api_key=API_KEY, model="fake/model:7b", **options)
        ledger = CostLedger(tmp_path / "costs.jsonl", prices={"fake/model:7b": [0.5, 1.0]}, use_env=False)
        return LLMAnnotator(client, schema, template or PromptTemplate.default(), ReplyCache(tmp_path / "cache"),
                            ledger, demo_index=demo_index, k=2, max_chars=max_chars)

    return build


def test_annotate_grounds_the_reply(make: Any) -> None:
    text = "aspirin relieved headache; aspirin again."
    outcome = make().annotate(text)
    assert outcome.ok and outcome.error is None and not outcome.cached
    assert [(text[s.start : s.end], s.label) for s in outcome.spans] == [
        ("aspirin", "Chemical"), ("headache", "Disease"), ("aspirin", "Chemical")]
    assert outcome.usage["prompt_tokens"] == 1000 and outcome.usage["usd"] == pytest.approx(0.6)


def test_cache_hit_costs_nothing_and_never_reaches_the_server(make: Any, fake_llm: FakeLLM,
                                                               tmp_path: Path) -> None:
    annotator = make()
    first = annotator.annotate("cocaine caused seizures")
    assert fake_llm.count == 1
    second = make().annotate("cocaine caused seizures")  # a fresh annotator (a restart): same disk cache
    assert fake_llm.count == 1
    assert second.cached and second.ok and second.spans == first.spans
    summary = CostLedger(tmp_path / "costs.jsonl", use_env=False).summary()["fake/model:7b"]
    assert summary["calls"] == 2 and summary["cached_calls"] == 1
    assert summary["usd"] == pytest.approx(0.6) and summary["prompt_tokens"] == 1000


def test_a_well_formed_empty_answer_is_ok_and_cached(make: Any, fake_llm: FakeLLM) -> None:
    fake_llm.default = reply('{"entities": []}')
    annotator = make()
    outcome = annotator.annotate("nothing to see")
    assert outcome.ok and outcome.spans == [] and outcome.error is None
    assert annotator.annotate("nothing to see").cached


@pytest.mark.parametrize("action, reason", [
    (status(500), "http_error"),
    (status(429), "rate_limited"),
    (sleep_then(2.0, reply("[]")), "timeout"),
    (reply("I could not find any entities, sorry."), "malformed_reply"),
    (reply('{"entities": [{"span": "aspirin", "type": "Chemical"}, {"span": "hea'), "malformed_reply"),
    (reply('{"entities": []}', finish_reason="length"), "cut_off"),
    (reply('{"entities": []}', finish_reason="content_filter"), "content_filter"),
])
def test_failure_is_not_no_entities(make: Any, fake_llm: FakeLLM, action: Any, reason: str) -> None:
    fake_llm.default = action
    # A short timeout only where a timeout is the point: on a loaded machine a 429 may take 0.3 s too.
    annotator = make(timeout=0.5 if reason == "timeout" else 5.0)
    outcome = annotator.annotate("aspirin and headache")
    assert not outcome.ok and outcome.spans == []
    assert outcome.error is not None and outcome.error.startswith(f"{reason}: ")
    asked = fake_llm.count
    fake_llm.default = lexicon_llm
    retry = annotator.annotate("aspirin and headache")  # failures are not cached: asked again
    assert fake_llm.count == asked + 1 and retry.ok and len(retry.spans) == 2
    assert annotator.stats == {"ok": 1, "failed": 1, "cached": 0}


def test_empty_text_is_not_annotated(make: Any, fake_llm: FakeLLM) -> None:
    outcome = make().annotate("   ")
    assert not outcome.ok and outcome.error is not None and outcome.error.startswith("no_text")
    assert fake_llm.count == 0


def test_dropped_mentions_are_reported(make: Any, fake_llm: FakeLLM) -> None:
    fake_llm.default = reply('{"entities": [{"span": "aspirin", "type": "Chemical"}, '
                             '{"span": "ibuprofen", "type": "Chemical"}, {"span": "aspirin", "type": "Drug"}]}')
    outcome = make().annotate("aspirin works")
    assert outcome.ok and len(outcome.spans) == 1
    assert sorted(r for _, _, r in outcome.dropped) == ["not in text", "unknown type"]


def test_demos_are_retrieved_and_sent_most_similar_last(make: Any, fake_llm: FakeLLM,
                                                        fake_embedder: FakeEmbedder) -> None:
    index = DemoIndex(fake_embedder, k=5)
    index.upsert("1", "markets fell today", [])
    index.upsert("2", "cocaine caused headache", [Span(0, 7, "Chemical"), Span(15, 23, "Disease")])
    index.upsert("3", "the weather was fine", [])
    make(index).annotate("cocaine caused seizures")
    user = fake_llm.requests[0]["messages"][-1]["content"]
    blocks = user.split("\n\n")
    assert len(blocks) == 3  # k=2 demos + the query
    assert blocks[1] == ('Input: "cocaine caused headache"\nOutput: {"entities":[{"span":"cocaine","type":"Chemical"},'
                         '{"span":"headache","type":"Disease"}]}')
    assert blocks[2] == 'Input: "cocaine caused seizures"\nOutput:'
    make(index, template=PromptTemplate.load("ner", "v1")).annotate("cocaine caused seizures")
    assert fake_llm.requests[1]["messages"][-1]["content"].endswith("\n\nInput: cocaine caused seizures\nOutput:")
    assert fake_llm.requests[0]["response_format"]["json_schema"]["schema"]["properties"]["entities"]["items"][
        "properties"]["type"]["enum"] == ["Chemical", "Disease"]


def test_a_broken_demo_index_degrades_to_zero_shot(make: Any, fake_llm: FakeLLM) -> None:
    class Broken:
        def nearest(self, text: str, k: int) -> list:
            raise RuntimeError("embedder exploded")

    outcome = make(Broken()).annotate("aspirin")
    assert outcome.ok and "Input: " in fake_llm.requests[0]["messages"][-1]["content"]


def test_annotate_many_keeps_order_dedupes_and_bounds_concurrency(make: Any, fake_llm: FakeLLM) -> None:
    fake_llm.default = sleep_then(0.05, lexicon_llm)
    annotator = make()
    texts = [f"aspirin case {i}" for i in range(12)] + ["aspirin case 3", "cocaine"]
    outcomes = annotator.annotate_many(texts, concurrency=3, progress=False)
    assert len(outcomes) == len(texts) and all(o.ok for o in outcomes)
    for text, outcome in zip(texts, outcomes, strict=True):
        assert text[outcome.spans[0].start : outcome.spans[0].end] == text.split()[0]
    assert fake_llm.count == 13  # the repeated text was asked once
    assert fake_llm.max_in_flight <= 3
    assert annotator.stats == {"ok": 13, "failed": 0, "cached": 0}


def test_annotate_many_mixes_failures_and_progress_bar(make: Any, fake_llm: FakeLLM,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    lock = threading.Lock()
    seen: dict[str, int] = {}

    def flaky(body: dict[str, Any]) -> Any:
        query = query_of(body)
        with lock:
            seen[query] = seen.get(query, 0) + 1
        return status(400)(body) if "bad" in query else lexicon_llm(body)

    fake_llm.default = flaky
    annotator = make()
    annotator.annotate("aspirin one")  # cached before the batch
    outcomes = annotator.annotate_many(["bad aspirin", "aspirin one", "cocaine"], concurrency=2, progress=True)
    assert [o.ok for o in outcomes] == [False, True, True] and outcomes[1].cached
    assert outcomes[0].error is not None and outcomes[0].error.startswith("http_error")
    assert "LLM annotation" in capsys.readouterr().err
    assert annotator.stats == {"ok": 3, "failed": 1, "cached": 1}
    assert annotator.annotate_many([], progress=False) == []


def test_model_version_names_model_and_template(make: Any) -> None:
    assert make().model_version == "llm-fake-model-7b-ner.v2"
    assert make(template=PromptTemplate.load("ner", "v1")).model_version == "llm-fake-model-7b-ner.v1"


def test_latency_of_many_is_concurrent(make: Any, fake_llm: FakeLLM) -> None:
    fake_llm.default = sleep_then(0.2, lexicon_llm)
    outcomes = make().annotate_many([f"aspirin {i}" for i in range(8)], concurrency=8, progress=False)
    assert all(o.ok for o in outcomes)
    # Overlap seen by the server, not wall-clock time: the machine may be loaded (the serial run is 1.6 s).
    assert fake_llm.max_in_flight >= 3


def test_an_interrupted_batch_stops_asking_instead_of_finishing_its_queue(make: Any, fake_llm: FakeLLM) -> None:
    """Ctrl-C / SIGTERM in the middle of a bulk batch: the calls not started yet are dropped (a grid's
    `kill` used to wait for all 200 queued calls of its cell)."""
    import _thread
    import signal

    fake_llm.default = sleep_then(0.1, lexicon_llm)
    annotator = make()
    # Python's own Ctrl-C handler, whatever an earlier test of the session installed for SIGINT.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.35, _thread.interrupt_main)
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            annotator.annotate_many([f"aspirin case {i}" for i in range(40)], concurrency=2, progress=False)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    asked = fake_llm.count
    assert 2 <= asked <= 12  # about 0.35 s of 2 lanes at 0.1 s a call, then only the in-flight ones


def test_free_text_requests_are_never_served_replies_made_under_the_json_schema(make: Any,
                                                                                 fake_llm: FakeLLM) -> None:
    """Same messages, other output format, other reply: the prompt grid's free-text cells were served the
    JSON-schema cells' cached replies (183 of 200) until the key told them apart."""
    text = "cocaine caused seizures"
    structured = make()
    assert structured.annotate(text).ok and fake_llm.count == 1
    assert structured.annotate(text).cached and fake_llm.count == 1
    free = make(structured_output=False)  # the same cache folder
    outcome = free.annotate(text)
    assert outcome.ok and not outcome.cached and fake_llm.count == 2
    assert "response_format" not in fake_llm.requests[-1]
    assert free.cache_key(text) != structured.cache_key(text)
    assert free.annotate(text).cached and fake_llm.count == 2  # free text is cached under its own key
