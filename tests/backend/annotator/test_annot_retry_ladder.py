"""The content-retry ladder: every rung is another request, sent as the rung says and cached under its own key."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from annot_fakes import API_KEY, FakeEmbedder, FakeLLM, query_of, reply, status

from backend.annotator.annotator import LLMAnnotator
from backend.annotator.cache import ReplyCache
from backend.annotator.client import GREEDY, LLMClient, Sampling
from backend.annotator.demos import DemoIndex
from backend.annotator.prompt import PromptTemplate
from backend.annotator.retry_ladder import (
    BASE,
    CONTENT_FAILURES,
    LADDER,
    RequestVariant,
    derived_seed,
    next_rung,
    variant_for,
)
from backend.labeling_config import LabelSchema
from training.spans import Span

K = 4
TEXT = "cisplatin caused nephrotoxicity"
ANSWER = json.dumps({"entities": [{"span": "cisplatin", "type": "Chemical"}]})


def request_shape(variant: RequestVariant, text: str = TEXT) -> tuple[int, float, int | None]:
    sampling = variant.sampling(text)
    return variant.k(K), sampling.temperature, sampling.seed


def demos_in(body: dict[str, Any]) -> int:
    """Demonstrations in a ner.v2 prompt: every `Input: ` line but the query's."""
    return sum(line.startswith("Input: ") for line in body["messages"][-1]["content"].split("\n")) - 1


@pytest.fixture
def annotator(tmp_path: Path, fake_llm: FakeLLM, schema: LabelSchema) -> LLMAnnotator:
    index = DemoIndex(FakeEmbedder(), k=K)
    for i in range(6):
        index.upsert(f"d{i}", f"demo {i}: aspirin caused headache", [Span(8, 15, "Chemical")])
    client = LLMClient(base_url=fake_llm.url, api_key=API_KEY, model="fake-model", timeout=2.0, max_retries=2,
                       backoff_base=0.01, backoff_max=0.02)
    return LLMAnnotator(client, schema, PromptTemplate.default(), ReplyCache(tmp_path / "cache"), None,
                        demo_index=index, k=K)


def test_every_attempt_on_a_task_sends_a_request_no_earlier_attempt_sent() -> None:
    assert LADDER[0] == BASE and request_shape(BASE) == (K, 0.0, None)
    shapes = [request_shape(variant_for(rung)) for rung in range(len(LADDER) + 4)]
    assert len(set(shapes)) == len(shapes)
    assert [variant_for(rung).rung for rung in range(len(LADDER) + 4)] == list(range(len(LADDER) + 4))
    assert LADDER[-1].temperature > 0  # so the rungs past the end differ by their seeds


def test_a_sampled_rung_is_reproducible_and_its_seed_depends_on_the_text_and_the_rung() -> None:
    sampled = next(v for v in LADDER if v.temperature > 0)
    assert sampled.sampling(TEXT) == sampled.sampling(TEXT)
    assert sampled.sampling(TEXT).seed == derived_seed(TEXT, sampled.rung) < 2**31
    assert derived_seed(TEXT, sampled.rung) != derived_seed(TEXT + ".", sampled.rung)
    assert derived_seed(TEXT, sampled.rung) != derived_seed(TEXT, sampled.rung + 1)


def test_only_a_content_failure_climbs_the_ladder() -> None:
    assert CONTENT_FAILURES == {"cut_off", "malformed_reply"}
    assert [next_rung(1, reason) for reason in ("cut_off", "malformed_reply")] == [2, 2]
    assert [next_rung(1, reason) for reason in ("timeout", "rate_limited", "http_error", "connection")] == [1] * 4


def test_each_rung_is_sent_as_the_ladder_says(annotator: LLMAnnotator, fake_llm: FakeLLM) -> None:
    fake_llm.default = reply(ANSWER)
    for rung in range(len(LADDER) + 1):
        outcome = annotator.annotate(TEXT, variant_for(rung))
        assert outcome.ok and outcome.variant.rung == rung and f"rung {rung}," in outcome.request
    for body, rung in zip(fake_llm.requests, range(len(LADDER) + 1), strict=True):
        k, temperature, seed = request_shape(variant_for(rung))
        assert query_of(body) == TEXT and demos_in(body) == k
        assert body["temperature"] == temperature and body.get("seed") == seed


def test_a_reply_is_served_from_the_cache_only_for_the_request_that_produced_it(annotator: LLMAnnotator,
                                                                                fake_llm: FakeLLM) -> None:
    fake_llm.default = reply(ANSWER)
    sampled = next(v for v in LADDER if v.temperature > 0)
    assert not annotator.annotate(TEXT).cached
    assert not annotator.annotate(TEXT, sampled).cached and fake_llm.count == 2  # not the base reply
    assert annotator.annotate(TEXT, sampled).cached and annotator.annotate(TEXT).cached and fake_llm.count == 2
    renumbered = variant_for(len(LADDER) + 1)  # the same shape as the last rung, another seed
    assert not annotator.annotate(TEXT, renumbered).cached and fake_llm.count == 3
    assert annotator.cache_key(TEXT, sampled) != annotator.cache_key(TEXT, renumbered)


def test_greedy_cache_keys_are_the_keys_of_caches_written_before_the_ladder() -> None:
    messages = [{"role": "user", "content": "Input: x\nOutput:"}]
    before = hashlib.sha256(json.dumps(["m", "ner.v2@abc", messages], ensure_ascii=False, sort_keys=True,
                                       separators=(",", ":")).encode()).hexdigest()
    assert ReplyCache.key("m", "ner.v2@abc", messages) == before
    assert ReplyCache.key("m", "ner.v2@abc", messages, GREEDY.cache_part()) == before
    assert ReplyCache.key("m", "ner.v2@abc", messages, Sampling(0.3, 7).cache_part()) != before
    assert ReplyCache.key("m", "ner.v2@abc", messages, Sampling(0.3, 7).cache_part()) != \
        ReplyCache.key("m", "ner.v2@abc", messages, Sampling(0.3, 8).cache_part())


def test_transport_retries_resend_the_same_request_on_every_rung(annotator: LLMAnnotator, fake_llm: FakeLLM) -> None:
    for variant in (BASE, LADDER[-1]):
        fake_llm.requests.clear()
        fake_llm.script = [status(503), status(429), reply(ANSWER)]
        outcome = annotator.annotate(TEXT + f" {variant.rung}", variant)
        assert outcome.ok and outcome.usage["attempts"] == 3 and fake_llm.count == 3
        assert fake_llm.requests[0] == fake_llm.requests[1] == fake_llm.requests[2]
        assert fake_llm.requests[0]["temperature"] == variant.temperature
