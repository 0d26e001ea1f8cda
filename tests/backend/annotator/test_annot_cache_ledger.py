"""ReplyCache (sqlite, keyed by model/template/messages) and CostLedger (JSONL, per-model totals)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from backend.annotator.cache import ReplyCache
from backend.annotator.client import Completion
from backend.annotator.ledger import CostLedger

MSGS = [{"role": "system", "content": "s"}, {"role": "user", "content": "Input: µg\nOutput:"}]


def completion(content: str = '{"entities": []}') -> Completion:
    return Completion(content=content, prompt_tokens=120, completion_tokens=30, model="m", latency_s=0.4)


def test_cache_key_depends_on_model_template_and_messages() -> None:
    base = ReplyCache.key("m", "ner.v1@abc", MSGS)
    assert base == ReplyCache.key("m", "ner.v1@abc", [dict(m) for m in MSGS])
    assert len({base, ReplyCache.key("m2", "ner.v1@abc", MSGS), ReplyCache.key("m", "ner.v2@abc", MSGS),
                ReplyCache.key("m", "ner.v1@abc", MSGS[:1])}) == 4


def test_cache_round_trip_and_persistence(tmp_path: Path) -> None:
    cache = ReplyCache(tmp_path / "c")
    key = ReplyCache.key("m", "t", MSGS)
    assert cache.get(key) is None and key not in cache
    cache.put(key, completion("[{\"span\": \"µg\"}]"))
    again = ReplyCache(tmp_path / "c").get(key)  # a new instance (a restart) sees it
    assert again is not None and again.content == '[{"span": "µg"}]'
    assert (again.prompt_tokens, again.completion_tokens, again.model) == (120, 30, "m")
    assert len(cache) == 1 and cache.hits == 0 and cache.misses == 1


def test_cache_is_safe_across_threads(tmp_path: Path) -> None:
    cache = ReplyCache(tmp_path)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(25):
                key = ReplyCache.key("m", "t", [{"role": "user", "content": f"{n}-{i}"}])
                cache.put(key, completion(f"{n}-{i}"))
                got = cache.get(key)
                assert got is not None and got.content == f"{n}-{i}"
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(cache) == 150


def test_ledger_sums_per_model(tmp_path: Path) -> None:
    ledger = CostLedger(tmp_path / "costs.jsonl", prices={"m": [1.0, 2.0]}, use_env=False)
    ledger.record("m", 1000, 500)
    ledger.record("m", 2000, 0)
    ledger.record("m", 999, 999, cached=True)  # a cache hit bills nothing
    summary = ledger.summary()["m"]
    assert summary == {"calls": 3, "cached_calls": 1, "prompt_tokens": 3000, "completion_tokens": 500,
                       "usd": pytest.approx(1.0 + 1.0 + 2.0), "unpriced_calls": 0}
    lines = [json.loads(x) for x in (tmp_path / "costs.jsonl").read_text().splitlines()]
    assert [x["cached"] for x in lines] == [False, False, True] and lines[2]["usd"] == 0
    assert {"ts", "model", "prompt_tokens", "completion_tokens", "cached", "usd"} <= set(lines[0])


def test_unknown_model_costs_zero_with_a_note(tmp_path: Path) -> None:
    ledger = CostLedger(tmp_path / "l.jsonl", use_env=False)
    entry = ledger.record("my-local-llama", 5000, 100)
    assert entry["usd"] == 0 and "no price" in entry["note"]
    assert ledger.summary()["my-local-llama"]["unpriced_calls"] == 1


def test_price_sources_and_formats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prices_file = tmp_path / "prices.json"
    prices_file.write_text(json.dumps({"a": [1, 1], "b": {"prompt": 2, "completion": 3}}))
    monkeypatch.setenv("LLM_PRICES", json.dumps({"b": [4, 4], "c": [5, 5]}))
    ledger = CostLedger(tmp_path / "l.jsonl", prices={"c": [6, 6]}, prices_file=prices_file)
    assert ledger.price("a") == (1.0, 1.0)
    assert ledger.price("b") == (4.0, 4.0)  # env overrides the file
    assert ledger.price("c") == (6.0, 6.0)  # the argument overrides env
    # Dated snapshots use the longest matching name in the table.
    assert ledger.price("gpt-4o-mini-2024-07-18") == ledger.price("gpt-4o-mini") != ledger.price("gpt-4o")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"a": [1]}))
    with pytest.raises(ValueError, match="prompt, completion"):
        CostLedger(tmp_path / "l.jsonl", prices_file=bad)
    monkeypatch.setenv("LLM_PRICES", "{not json")
    with pytest.raises(ValueError, match="LLM_PRICES"):
        CostLedger(tmp_path / "l.jsonl")


def test_summary_sees_other_writers_and_skips_partial_lines(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    reader = CostLedger(path, prices={"m": [1, 1]}, use_env=False)
    writer = CostLedger(path, prices={"m": [1, 1]}, use_env=False)  # e.g. another process
    writer.record("m", 1000, 0)
    assert reader.summary()["m"]["calls"] == 1
    writer.record("m", 1000, 0)
    with path.open("a") as fh:
        fh.write('{"model": "m", "prompt_tok')  # a line still being written
    assert reader.summary()["m"]["calls"] == 2
    with path.open("a") as fh:
        fh.write('ens": 7}\nnot json\n')
    summary = reader.summary()["m"]
    assert summary["calls"] == 3 and summary["prompt_tokens"] == 2007
