"""Adversarial LLM replies (fixtures/adversarial_replies.json): the right spans, or a failure, never `[]`.

Each fixture is sent by the fake LLM server over real HTTP with its `finish_reason`, and goes through
the whole annotator (client, finish_reason check, parser, grounding). `expect` is either a failure
reason (`cut_off`, `content_filter`, `malformed_reply`) or the (span, type) pairs of a usable answer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from annot_fakes import API_KEY, FakeLLM, reply

from backend.annotator.annotator import LLMAnnotator
from backend.annotator.cache import ReplyCache
from backend.annotator.client import LLMClient
from backend.annotator.ledger import CostLedger
from backend.annotator.parsing import MalformedReplyError, parse_reply
from backend.annotator.prompt import PromptTemplate
from backend.labeling_config import LabelSchema
from backend.metrics import Registry

TEXT = "Aspirin caused a headache in the patient."
FIXTURES: list[dict[str, Any]] = json.loads(
    (Path(__file__).with_name("fixtures") / "adversarial_replies.json").read_text(encoding="utf-8"))
IDS = [f["name"] for f in FIXTURES]
METRIC_KIND = {"cut_off": "cut_off", "content_filter": "content_filter", "malformed_reply": "malformed"}


def test_the_fixtures_cover_every_kind() -> None:
    kinds = {f["expect"] if isinstance(f["expect"], str) else "spans" for f in FIXTURES}
    assert kinds == {"cut_off", "content_filter", "malformed_reply", "spans"}
    assert {f["finish_reason"] for f in FIXTURES} == {"stop", "length", "content_filter"}


@pytest.mark.parametrize("fixture", [f for f in FIXTURES if f["finish_reason"] == "stop"],
                         ids=[f["name"] for f in FIXTURES if f["finish_reason"] == "stop"])
def test_parser_alone(fixture: dict[str, Any]) -> None:
    if isinstance(fixture["expect"], str):
        with pytest.raises(MalformedReplyError):
            parse_reply(fixture["content"])
    else:
        assert sorted(parse_reply(fixture["content"])) == sorted(map(tuple, fixture["expect"]))


@pytest.mark.parametrize("fixture", FIXTURES, ids=IDS)
def test_end_to_end(fixture: dict[str, Any], fake_llm: FakeLLM, schema: LabelSchema, tmp_path: Path) -> None:
    fake_llm.default = reply(fixture["content"], finish_reason=fixture["finish_reason"], completion_tokens=33)
    metrics = Registry()
    client = LLMClient(base_url=fake_llm.url, api_key=API_KEY, model="m", timeout=2.0, max_retries=0,
                       metrics=metrics)
    ledger = CostLedger(tmp_path / "costs.jsonl", prices={"m": [1.0, 1.0]}, use_env=False)
    annotator = LLMAnnotator(client, schema, PromptTemplate.default(), ReplyCache(tmp_path / "cache"), ledger,
                             max_chars=1000, metrics=metrics)
    outcome = annotator.annotate(TEXT)
    expect = fixture["expect"]
    if isinstance(expect, str):
        assert not outcome.ok and outcome.spans == [], fixture["why"]
        assert outcome.reason == expect and outcome.error is not None
        assert metrics.get("llmaaa_llm_errors_total", kind=METRIC_KIND[expect], status="none") == 1
        # Not cached: the next call asks again, and the paid tokens are in the ledger as a failed call.
        annotator.annotate(TEXT)
        assert fake_llm.count == 2
        row = ledger.summary()["m"]
        assert row["completion_tokens"] == 66 and row["calls"] == 2
        last = json.loads(ledger.path.read_text(encoding="utf-8").splitlines()[-1])
        assert last["ok"] is False and last["reason"] == expect
    else:
        assert outcome.ok, outcome.error
        got = sorted((TEXT[s.start : s.end], s.label) for s in outcome.spans)
        assert got == sorted(map(tuple, expect)), fixture["why"]
        assert metrics.get("llmaaa_llm_errors_total", kind="malformed", status="none") == 0
