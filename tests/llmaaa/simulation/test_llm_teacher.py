"""`LLMTeacher`: labels through the annotator from an endpoint (here the SIMULATED server), k-NN demos from
the gold set, replies cached so a re-run makes no call, failures recorded and never empty labels."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
import pytest

from llmaaa.services import free_port, serve_in_thread
from llmaaa.simulation.llm_teacher import LLMTeacher, LLMTeacherError
from llmaaa.simulation.server import FaultConfig, create_app
from llmaaa.simulation.teacher import SimulatedTeacher
from training.data import Example, load_split


class WordEmbedder:
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), 32), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % 32] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


@pytest.fixture(scope="module")
def sentences(bc5cdr_dir: Path) -> tuple[list[Example], list[Example]]:
    dev = load_split(bc5cdr_dir / "dev.jsonl", limit=60)
    return dev[:20], dev[20:]  # (gold demos, sentences to label)


def teacher_for(url: str, gold: list[Example], cache: Path, timeout: float = 10, **kw: object) -> LLMTeacher:
    return LLMTeacher(gold, ["Chemical", "Disease"], base_url=url, cache_dir=cache, k=3, embedder=WordEmbedder(),
                      prompt_version="v1", timeout=timeout, max_retries=0, **kw)  # type: ignore[arg-type]


def spans(ex: Example) -> set[tuple[int, int, str]]:
    return {(s.start, s.end, s.label) for s in ex.spans}


def test_labels_come_from_the_endpoint_and_a_rerun_is_free(sentences: tuple[list[Example], list[Example]],
                                                           tmp_path: Path) -> None:
    gold, pool = sentences
    sim = SimulatedTeacher(gold + pool, noise=0.0, seed=0)
    with serve_in_thread(create_app(sim), "/v1") as url:
        teacher = teacher_for(url, gold, tmp_path / "cache")
        labeled = [teacher.label(ex) for ex in pool[:10]]
        requests = httpx.get(url + "/simulation/stats").json()["counters"]["requests"]
    assert requests == 10 and teacher.calls == 10 and not teacher.failures
    assert all(spans(got) == spans(ex) and got.id == ex.id for got, ex in zip(labeled, pool, strict=False))
    # The same cache, and nothing listening at the endpoint: every label comes from the cache.
    dead = f"http://127.0.0.1:{free_port()}/v1"
    again = teacher_for(dead, gold, tmp_path / "cache", model="simulated-llm")
    assert [spans(again.label(ex)) for ex in pool[:10]] == [spans(x) for x in labeled]
    assert again.stats["cached"] == 10


def test_noisy_endpoint_labels_differ_from_gold(sentences: tuple[list[Example], list[Example]],
                                                tmp_path: Path) -> None:
    gold, pool = sentences
    with serve_in_thread(create_app(SimulatedTeacher(gold + pool, noise=0.8, seed=0),
                                    FaultConfig(seed=0)), "/v1") as url:
        labeled = teacher_for(url, gold, tmp_path / "c").label_many(pool, concurrency=4)
    assert all(x is not None for x in labeled)
    assert sum(spans(x) != spans(ex) for x, ex in zip(labeled, pool, strict=True) if x is not None) >= 5


def test_failures_are_recorded_and_raised_never_empty(sentences: tuple[list[Example], list[Example]],
                                                      tmp_path: Path) -> None:
    gold, pool = sentences
    faults = FaultConfig(fail_rate=1.0, hang_s=2.0, retry_after_s=0.0, seed=0)  # a hang outlasts the timeout
    with serve_in_thread(create_app(SimulatedTeacher(gold + pool, noise=0.0), faults), "/v1") as url:
        teacher = teacher_for(url, gold, tmp_path / "c", timeout=1, model="simulated-llm")
        with pytest.raises(LLMTeacherError) as err:
            teacher.label(pool[0])
        batch = teacher.label_many(pool[1:4])
    assert err.value.example_id == pool[0].id and err.value.reason in {"rate_limited", "http_error", "timeout"}
    assert batch == [None, None, None]
    assert set(teacher.failures) == {ex.id for ex in pool[:4]} and teacher.stats["failed"] == 4


@pytest.mark.slow
def test_simulate_teacher_llm_labels_through_the_endpoint_end_to_end(bc5cdr_dir: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`llmaaa simulate --teacher llm`: every LLM label of the loop is one call to OPENAI_BASE_URL (here the
    simulated server at noise 0, standing in for `llmaaa local-llm`); the CI test of the real model is
    tests/llmaaa/test_llm_eval.py."""
    import json

    from llmaaa.cli import main

    known = load_split(bc5cdr_dir / "train.jsonl") + load_split(bc5cdr_dir / "dev.jsonl")
    monkeypatch.chdir(tmp_path)  # the teacher's reply cache defaults to ./.llmaaa
    with serve_in_thread(create_app(SimulatedTeacher(known, noise=0.0, seed=0)), "/v1") as url:
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        monkeypatch.setenv("OPENAI_API_KEY", "simulated")
        monkeypatch.delenv("LLM_MODEL", raising=False)  # asked from GET /v1/models
        code = main(["simulate", "--data", str(bc5cdr_dir), "--out", str(tmp_path / "sim"), "--teacher", "llm",
                     "--teacher-cache", str(tmp_path / "replies"), "--strategy", "random", "--seed-size", "8",
                     "--round-size", "4", "--rounds", "1",
                     "--gold-size", "6", "--max-epochs", "1", "--pool-size", "30", "--test-size", "10",
                     "--seed", "3"])
        counters = httpx.get(url + "/simulation/stats").json()["counters"]
    assert code == 0
    teacher = json.loads((tmp_path / "sim" / "results.json").read_text())["teacher"]
    assert teacher["kind"] == "llm"
    assert teacher["calls"] == 12 == counters["requests"]  # one call a label, none from a cache (a fresh run)
    assert teacher["labels"] + teacher["not_annotated"] == 12 and teacher["labels"] >= 10
    assert teacher["f1"] > 0.9  # noise 0: the endpoint answered gold, and the loop kept what it answered
    assert (tmp_path / "replies" / "costs.jsonl").is_file() and not (tmp_path / ".llmaaa").exists()


def test_simulate_gives_the_llm_teacher_the_verbalized_labels_and_its_cache(bc5cdr_dir: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop's real teacher is prompted as the backend and `llm-eval` are: with examples/<data>/labels.json."""
    import llmaaa.simulation.llm_teacher as module
    from llmaaa.simulate import SimulationConfig, make_teacher

    seen: dict[str, object] = {}

    class Recorder:
        def __init__(self, gold: list[Example], labels: list[str], *, descriptions: dict[str, str],
                     cache_dir: Path | None = None) -> None:
            seen.update(descriptions=descriptions, cache_dir=cache_dir, labels=labels)

    monkeypatch.setattr(module, "LLMTeacher", Recorder)
    cfg = SimulationConfig(data=bc5cdr_dir, out=tmp_path, teacher_kind="llm", teacher_cache=tmp_path / "c")
    make_teacher(cfg, [], ["Chemical", "Disease"], [])
    hints = seen["descriptions"]
    assert isinstance(hints, dict) and "drug" in hints["Chemical"] and "disease" in hints["Disease"]
    assert seen["cache_dir"] == tmp_path / "c"
