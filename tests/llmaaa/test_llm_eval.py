"""`llmaaa llm-eval` against the SIMULATED LLM server; marker `llm`: the CLI against a real `llmaaa local-llm`."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from llmaaa import llm_eval
from llmaaa.llm_eval import CachedEmbedder, EvalConfig, RandomDemos, build_schema, run_eval
from llmaaa.services import free_port, llmaaa_command, serve_in_thread, start_local_llm
from llmaaa.simulation.server import FaultConfig, create_app
from llmaaa.simulation.teacher import SimulatedTeacher
from training.data import load_split, sample


class WordEmbedder:
    """Cheap deterministic bag-of-words vectors, counting the texts it embeds (MiniLM is too slow here)."""

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.embedded = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.embedded += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


@pytest.fixture(scope="module")
def data(bc5cdr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small BC5CDR-shaped dataset (named bc5cdr, so the label hints of examples/bc5cdr are found)."""
    root = tmp_path_factory.mktemp("data") / "bc5cdr"
    root.mkdir()
    for split, n in (("train", 80), ("dev", 40)):
        lines = (bc5cdr_dir / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:n]
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def simulated(data: Path, **kw: Any) -> Any:
    teacher = SimulatedTeacher(load_split(data / "train.jsonl") + load_split(data / "dev.jsonl"), noise=0.0, seed=1)
    return create_app(teacher, kw.pop("faults", None), **kw)


@pytest.fixture
def sim_url(data: Path) -> Iterator[str]:
    with serve_in_thread(simulated(data), "/v1") as url:
        yield url


def config(data: Path, out: Path, url: str, **kw: Any) -> EvalConfig:
    # ner.v1: the prompt the simulated LLM reads (docs/architecture.md, "Prompt contract").
    base: dict[str, Any] = {"data": data, "out": out, "n": 20, "demos": "knn", "k": 3, "seed": 0, "base_url": url,
                            "cache": out.parent / "cache", "prompt_version": "v1", "timeout": 10, "max_retries": 0}
    return EvalConfig(**{**base, **kw})


def test_noise_free_simulation_scores_one_and_writes_every_field(data: Path, sim_url: str, tmp_path: Path) -> None:
    res = run_eval(config(data, tmp_path / "out", sim_url), embedder=WordEmbedder())
    assert res["f1"] == pytest.approx(1.0) and res["failed"] == 0 and res["n"] == 20
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    for key in ("f1", "precision", "recall", "failed", "seconds", "config", "per_label", "tokens", "latency_s"):
        assert key in saved
    assert set(saved["per_label"]) == {"Chemical", "Disease"}
    assert saved["config"]["model"] == "simulated-llm"  # asked from GET /v1/models
    assert saved["tokens"]["prompt_total"] > 0 and saved["latency_s"]["calls"] == 20
    assert saved["config"]["demo_pool_size"] == 80 and saved["config"]["json_schema_used"] is True
    assert saved["config"]["labels"]["Chemical"].startswith("a chemical or drug")  # hints from examples/bc5cdr
    lines = (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 20 and all(json.loads(line)["ok"] for line in lines)


def test_failures_are_counted_and_excluded_not_scored_as_empty(data: Path, tmp_path: Path) -> None:
    faults = FaultConfig(fail_rate=0.5, hang_s=0.0, retry_after_s=0.0, seed=3)
    with serve_in_thread(simulated(data, faults=faults), "/v1") as url:
        res = run_eval(config(data, tmp_path / "out", url, demos="none"))
        stats = httpx.get(url + "/simulation/stats").json()["counters"]
    injected = stats.get("fault_rate_limited", 0) + stats.get("fault_server_error", 0)
    assert 0 < res["failed"] == injected < 20  # hangs of 0 s still answer
    assert res["answered"] + res["failed"] == 20
    assert res["f1"] == pytest.approx(1.0)  # the answered ones are right; failures are not "no entities"
    assert res["f1_failed_as_empty"] < 1.0
    assert set(res["errors"]) <= {"rate_limited", "http_error"}


def test_rerun_is_served_from_the_cache_with_the_same_tokens(data: Path, sim_url: str, tmp_path: Path) -> None:
    emb = WordEmbedder()
    first = run_eval(config(data, tmp_path / "a", sim_url, demos="random"), embedder=emb)
    again = run_eval(config(data, tmp_path / "b", sim_url, demos="random"), embedder=emb)
    assert first["cached"] == 0 and again["cached"] == 20
    assert again["tokens"] == first["tokens"]  # what the prompt costs, not what this run paid
    assert again["f1"] == first["f1"]


def test_a_reply_cached_under_the_documented_key_is_served_without_the_endpoint(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reply cache key is sha256 over [model, template cache id, rendered messages] (docs/architecture.md):
    caches written by earlier runs (benchmarks/results/prompt/cache) must still be hit. The environment's
    NER_DOMAIN / KNN_K must not leak into the prompt (that would change every key)."""
    from backend.annotator import PromptTemplate, ReplyCache
    from backend.annotator.client import Completion

    monkeypatch.setenv("NER_DOMAIN", "legal contracts")
    monkeypatch.setenv("KNN_K", "9")
    cfg = config(data, tmp_path / "out", f"http://127.0.0.1:{free_port()}/v1", demos="none", n=4, model="m")
    picked = sample(load_split(data / "dev.jsonl"), cfg.n, cfg.seed)  # what run_eval annotates
    schema = build_schema(["Chemical", "Disease"], llm_eval.label_descriptions(data))
    template = PromptTemplate.load("ner", "v1")
    cache = ReplyCache(cfg.cache)
    for ex in picked:
        messages = template.render(schema.labels, [], ex.text, None)
        payload = json.dumps(["m", template.cache_id, messages], ensure_ascii=False, sort_keys=True,
                             separators=(",", ":"))
        cache.put(hashlib.sha256(payload.encode("utf-8")).hexdigest(),
                  Completion('{"entities": []}', prompt_tokens=11, completion_tokens=3, model="m", latency_s=0.1))
    res = run_eval(cfg)
    assert len(picked) == 4 and res["cached"] == 4 and res["failed"] == 0  # nothing listens at the endpoint
    assert res["tokens"]["prompt_total"] == 44 and res["config"]["template"] == template.cache_id


def test_free_text_never_sends_json_schema(data: Path, tmp_path: Path) -> None:
    with serve_in_thread(simulated(data, json_schema=False), "/v1") as url:
        plain = run_eval(config(data, tmp_path / "plain", url, demos="none", n=5, json_schema=False,
                                cache=tmp_path / "c1"))
        assert httpx.get(url + "/simulation/stats").json()["counters"].get("rejected_json_schema", 0) == 0
        structured = run_eval(config(data, tmp_path / "schema", url, demos="none", n=5, cache=tmp_path / "c2"))
        # Asked for json_schema once, refused, then plain for good.
        assert httpx.get(url + "/simulation/stats").json()["counters"]["rejected_json_schema"] == 1
    assert plain["config"]["json_schema_used"] is False and structured["config"]["json_schema_used"] is False
    assert plain["f1"] == structured["f1"] == pytest.approx(1.0)


def test_hints_off_describes_each_label_by_its_value(data: Path) -> None:
    hints = llm_eval.label_descriptions(data)
    assert build_schema(["Chemical", "Disease"], hints, hints=False).labels[0].description == "Chemical"
    on = build_schema(["Chemical", "Disease"], hints, hints=True)
    assert on.labels[1].description == hints["Disease"] != "Disease"


def test_random_demos_are_reproducible_per_query_and_never_the_query(data: Path) -> None:
    train = load_split(data / "train.jsonl")
    demos = RandomDemos(train, seed=0)
    query = train[5].text
    picked = demos.nearest(query, 10)
    assert [d.text for d in picked] == [d.text for d in RandomDemos(train, seed=0).nearest(query, 10)]
    assert query not in {d.text for d in picked} and len(picked) == 10
    assert [d.text for d in picked] != [d.text for d in RandomDemos(train, seed=1).nearest(query, 10)]


def test_cached_embedder_embeds_each_text_once_across_instances(tmp_path: Path) -> None:
    texts = [f"sentence number {i}" for i in range(20)]
    inner = WordEmbedder()
    first = CachedEmbedder(tmp_path / "e.npz", inner).embed(texts)
    assert inner.embedded == 20
    later = WordEmbedder()
    again = CachedEmbedder(tmp_path / "e.npz", later).embed(list(reversed(texts)))
    assert later.embedded == 0 and np.allclose(again, first[::-1])


def test_cli_without_an_endpoint_exits_2(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    parser = argparse.ArgumentParser()
    llm_eval.register(parser.add_subparsers())
    args = parser.parse_args(["llm-eval", "--data", str(data), "--n", "3", "--out", str(tmp_path / "o")])
    assert args.func(args) == 2
    assert "OPENAI_BASE_URL" in capsys.readouterr().err


# ------------------------------------------------------------------------------ the real model (CI runs this)

REAL_SENTENCES = 5


@pytest.mark.llm
def test_real_local_llm_cli_annotates_five_bc5cdr_dev_sentences(bc5cdr_dir: Path, tmp_path: Path) -> None:
    """`llmaaa llm-eval` against a real `llmaaa local-llm` (the packaged Gemma 3 270M), both as processes.

    The test CI runs (tests/conftest.py fails it there when the model is missing). One llama.cpp thread: on
    a shared machine its threads wait on each other. A long timeout and no retries: the server does not
    cancel a call its client gave up on, so a retry would only queue behind it. Fresh caches: every reply
    comes from the model now.
    """
    from llmaaa.demo import LOCAL_MODEL_ID

    env = {"LLMAAA_TORCH_THREADS": os.environ.get("LLMAAA_TORCH_THREADS", "1"), "OPENAI_API_KEY": "local"}
    server = start_local_llm(tmp_path / "local-llm.log", "--model-name", LOCAL_MODEL_ID, "--concurrency", "1",
                             "--threads", "1", timeout=300, env=env)
    try:
        out = tmp_path / "eval"
        began = time.monotonic()
        run = subprocess.run(
            llmaaa_command("llm-eval", "--data", str(bc5cdr_dir), "--split", "dev", "--n", str(REAL_SENTENCES),
                           "--demos", "knn", "--k", "3", "--demo-pool", "200", "--seed", "0", "--out", str(out),
                           "--base-url", server.url, "--timeout", "300", "--max-retries", "0",
                           "--cache", str(tmp_path / "cache")),
            env={**os.environ, **env}, capture_output=True, text=True, timeout=900)
        took = time.monotonic() - began
        stats = httpx.get(f"{server.url}/local/stats", timeout=10).json()
    finally:
        server.stop()
    assert run.returncode == 0, f"{run.stderr[-3000:]}\nlocal-llm log:\n{server.tail()}"
    res = json.loads((out / "results.json").read_text())
    print(json.dumps({"cli_seconds": round(took, 1), **{k: res[k] for k in
                      ("f1", "precision", "recall", "answered", "failed", "errors", "seconds", "latency_s")}}))
    assert res["n"] == REAL_SENTENCES and res["answered"] + res["failed"] == REAL_SENTENCES
    assert res["answered"] >= 1  # at least one reply of the model parsed into grounded spans
    assert set(res["errors"]) <= {"cut_off", "malformed_reply", "timeout", "http_error", "connection"}
    assert all(0.0 <= res[k] <= 1.0 for k in ("f1", "precision", "recall", "f1_failed_as_empty"))
    assert res["cached"] == 0 and res["latency_s"]["calls"] == res["answered"]
    assert res["tokens"]["prompt_mean"] > 100 and res["tokens"]["completion_mean"] > 0
    assert res["config"]["model"] == LOCAL_MODEL_ID and res["config"]["json_schema_used"] is True
    # Every sentence reached the real server (a cut-off reply is computed too, then counted as failed).
    assert stats["completions"] == REAL_SENTENCES and stats["prompt_tokens"] > 100 * REAL_SENTENCES
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == REAL_SENTENCES and all(row["ok"] or row["error"] for row in rows)
