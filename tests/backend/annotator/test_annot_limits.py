"""MAX_TASK_CHARS (issue 12 item 9): a longer text is never sent to the LLM and is "not annotated: too_long"."""

from __future__ import annotations

from pathlib import Path

import pytest
from annot_fakes import API_KEY, FakeEmbedder, FakeLLM, query_of, reply

from backend.annotator.annotator import LLMAnnotator
from backend.annotator.cache import ReplyCache
from backend.annotator.client import LLMClient
from backend.annotator.demos import DemoIndex
from backend.annotator.prompt import PromptTemplate
from backend.labeling_config import LabelSchema
from backend.metrics import Registry
from backend.settings import Settings, get_settings


def _annotator(fake_llm: FakeLLM, schema: LabelSchema, tmp_path: Path, max_chars: int | None,
               demo_index: DemoIndex | None = None) -> LLMAnnotator:
    client = LLMClient(base_url=fake_llm.url, api_key=API_KEY, model="m", timeout=2.0, max_retries=0,
                       metrics=Registry())
    return LLMAnnotator(client, schema, PromptTemplate.default(), ReplyCache(tmp_path / "cache"),
                        demo_index=demo_index, k=5, max_chars=max_chars, metrics=Registry())


def test_a_text_over_the_cap_is_not_sent(fake_llm: FakeLLM, schema: LabelSchema, tmp_path: Path) -> None:
    fake_llm.default = reply('{"entities": []}')
    annotator = _annotator(fake_llm, schema, tmp_path, max_chars=40)
    outcome = annotator.annotate("aspirin " * 6)  # 48 characters
    assert not outcome.ok and outcome.spans == [] and outcome.reason == "too_long"
    assert outcome.error is not None and "48 characters" in outcome.error and "MAX_TASK_CHARS (40)" in outcome.error
    assert fake_llm.count == 0
    assert annotator.stats["failed"] == 1
    at_cap = annotator.annotate("a" * 40)
    assert at_cap.ok and fake_llm.count == 1  # the cap itself is allowed


def test_the_default_cap_comes_from_the_setting(monkeypatch: pytest.MonkeyPatch, fake_llm: FakeLLM,
                                               schema: LabelSchema, tmp_path: Path) -> None:
    assert Settings().max_task_chars == 20_000  # the documented default
    monkeypatch.setenv("MAX_TASK_CHARS", "25")
    get_settings.cache_clear()
    try:
        annotator = _annotator(fake_llm, schema, tmp_path, max_chars=None)
        assert annotator.max_chars == 25
        assert annotator.annotate("x" * 26).reason == "too_long" and fake_llm.count == 0
    finally:
        get_settings.cache_clear()
    with pytest.raises(ValueError):
        _annotator(fake_llm, schema, tmp_path, max_chars=0)


def test_a_million_characters_never_reach_the_llm(fake_llm: FakeLLM, schema: LabelSchema, tmp_path: Path) -> None:
    outcome = _annotator(fake_llm, schema, tmp_path, max_chars=20_000).annotate("aspirin. " * 120_000)
    assert outcome.reason == "too_long" and fake_llm.count == 0


def test_demos_share_the_budget_least_similar_dropped_first(fake_llm: FakeLLM, schema: LabelSchema,
                                                            tmp_path: Path, fake_embedder: FakeEmbedder) -> None:
    index = DemoIndex(fake_embedder, k=5)
    index.upsert("near", "cocaine caused seizures in rats", [])
    index.upsert("far", "cocaine " + "filler words " * 10, [])  # 138 characters, less similar
    fake_llm.default = reply('{"entities": []}')
    annotator = _annotator(fake_llm, schema, tmp_path, max_chars=100, demo_index=index)
    assert annotator.annotate("cocaine caused seizures").ok
    user = fake_llm.requests[0]["messages"][-1]["content"]
    assert "cocaine caused seizures in rats" in user and "filler" not in user
    assert query_of(fake_llm.requests[0]) == "cocaine caused seizures"
