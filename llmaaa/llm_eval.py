"""`llmaaa llm-eval`: the annotator's prompt measured on a labeled dataset, against any OpenAI-compatible LLM.

It calls `OPENAI_BASE_URL` through the backend's own annotator (`backend.annotator`: prompt template,
client with retries, reply cache, parsing and grounding), built by the backend's composition root
(`backend.composition.Services`, see `llm_services`), so what it measures is what the backend does.
Demonstrations come from the dataset's train split: none, random, or k-NN with the backend's
MiniLM retrieval (`DemoIndex` over `SentenceEmbedder`).

Two factors are set at this layer, since the annotator has no switch for them:
- `--no-hints`: the label schema's descriptions are the bare label values ("- Chemical: Chemical"),
  instead of the verbalized descriptions of `examples/<dataset>/labels.json`;
- `--free-text`: the client never sends a `json_schema` response format (constrained decoding off);
  the prompt still asks for JSON and the reply goes through the same tolerant parser.

A failed call (HTTP error, timeout, unparseable reply) is counted in `failed` and left out of the
scores; it is never scored as "no entities". `f1_failed_as_empty` gives the stricter view.
Writes OUT/results.json and OUT/predictions.jsonl.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from llmaaa.cli import positive_int
from training.data import Example, label_set, load_split, sample

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path(".llmaaa") / "llm-eval-cache"


class EvalError(RuntimeError):
    """Bad input for an evaluation (no endpoint, no data): reported and exit status 2."""


# ------------------------------------------------------------------------------------ demonstrations

class CachedEmbedder:
    """Sentence vectors cached on disk by text, so the train split is embedded once per dataset.

    The real embedder (MiniLM, `training.embedder.SentenceEmbedder`) is loaded only when a text is missing.
    """

    def __init__(self, path: Path, embedder: Any = None) -> None:
        self.path = Path(path)
        self._embedder = embedder
        self._lock = threading.Lock()
        self._vectors: dict[str, np.ndarray] = {}
        if self.path.exists():
            with np.load(self.path) as z:
                self._vectors = dict(zip(z["keys"].tolist(), z["vectors"], strict=True))

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    def _real(self) -> Any:
        if self._embedder is None:
            from training.embedder import SentenceEmbedder

            self._embedder = SentenceEmbedder()
        return self._embedder

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        keys = [self._key(t) for t in texts]
        with self._lock:
            missing = sorted({(k, t) for k, t in zip(keys, texts, strict=True) if k not in self._vectors})
            if missing:
                fresh = self._real().embed([t for _, t in missing])
                self._vectors.update({k: v for (k, _), v in zip(missing, fresh, strict=True)})
                if len(missing) >= 16:  # single query texts are cheap to redo; a split is not
                    self._save()
            return np.stack([self._vectors[k] for k in keys]) if keys else np.zeros((0, 384), np.float32)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp.npz")
        keys = sorted(self._vectors)
        np.savez(tmp, keys=np.array(keys), vectors=np.stack([self._vectors[k] for k in keys]))
        os.replace(tmp, self.path)


class RandomDemos:
    """`k` random train examples per query, the same ones for the same (seed, query) on every run.

    Duck-types `DemoIndex.nearest`, which is all the annotator asks of a demo source."""

    def __init__(self, examples: Sequence[Example], seed: int) -> None:
        self.examples = list(examples)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.examples)

    def nearest(self, query_text: str, k: int | None = None) -> list[Any]:
        from backend.annotator import Demo

        k = 5 if k is None else k
        target = query_text.strip()
        pool = [ex for ex in self.examples if ex.text.strip() != target]
        rng = random.Random(f"{self.seed}\x00{query_text}")
        return [Demo(ex.text, list(ex.spans)) for ex in rng.sample(pool, min(k, len(pool)))]


def knn_index(examples: Sequence[Example], embedder: Any, k: int) -> Any:
    from backend.annotator import DemoIndex

    index = DemoIndex(embedder, k=k)
    index.upsert_many((ex.id, ex.text, ex.spans) for ex in examples)
    return index


# ------------------------------------------------------------------------------------ endpoint, schema

def endpoint_model(base_url: str, api_key: str = "", timeout: float = 10.0) -> str:
    """The first model id the endpoint lists at GET /models (a local server serves one)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        resp = httpx.get(base_url.rstrip("/") + "/models", headers=headers, timeout=timeout)
        resp.raise_for_status()
        data = resp.json().get("data") or []
        return str(data[0]["id"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise EvalError(f"cannot list the models of {base_url} ({type(exc).__name__}); pass --model") from exc


def label_descriptions(data: Path, labels_file: Path | None = None) -> dict[str, str]:
    """Verbalized label hints: `labels_file`, else `examples/<dataset folder name>/labels.json`, else none."""
    from backend.labeling_config import load_label_descriptions

    path = labels_file or REPO / "examples" / Path(data).name / "labels.json"
    if labels_file is not None and not Path(labels_file).is_file():
        raise EvalError(f"labels file {labels_file} not found")
    return load_label_descriptions(path) if Path(path).is_file() else {}


def build_schema(labels: Sequence[str], descriptions: dict[str, str], hints: bool = True) -> Any:
    """The annotator's label schema; without hints every description is the bare label value."""
    from backend.labeling_config import LabelSchema, LabelSpec

    specs = [LabelSpec(lab, (descriptions.get(lab) or lab) if hints else lab) for lab in labels]
    return LabelSchema("label", "text", "text", specs)


# ------------------------------------------------------------------------------------ evaluation

@dataclass
class EvalConfig:
    data: Path
    out: Path
    split: str = "dev"
    n: int | None = 200
    demos: str = "knn"  # none | random | knn
    k: int = 5
    seed: int = 0
    hints: bool = True
    json_schema: bool = True
    labels_file: Path | None = None
    demo_pool: int | None = None  # train examples to draw demos from (None: the whole split)
    base_url: str | None = None
    model: str | None = None
    prompt_version: str | None = None  # None: the backend's default template version
    domain: str | None = None
    concurrency: int = 1
    timeout: float = 180.0
    max_retries: int = 2
    max_tokens: int = 256
    cache: Path = DEFAULT_CACHE
    embedding_cache: Path | None = None  # None: <cache>/embeddings.npz


def default_prompt_version() -> str:
    """The template version the backend uses (its newest), so llm-eval measures the backend's prompt."""
    from backend.annotator import prompt

    return str(getattr(prompt, "DEFAULT_TEMPLATE_VERSION", "v1"))


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values), q)) if values else None


def resolve_model(base_url: str, api_key: str, model: str | None) -> str:
    """`model`, else $LLM_MODEL, else the first model the endpoint lists."""
    return model or os.environ.get("LLM_MODEL") or endpoint_model(base_url, api_key)


def llm_services(*, base_url: str, api_key: str, model: str, cache: Path, ledger: Path, k: int, timeout: float,
                 max_retries: int, max_tokens: int, json_schema: bool, prompt_version: str | None,
                 domain: str | None = None) -> Any:
    """The backend's composition root (`backend.composition.Services`) set for one evaluation run.

    llm-eval and the LLM teacher get the backend's own client, reply cache, ledger, template and
    annotator from it, so they measure what the backend does. The reply cache key (model, template,
    rendered messages) is the backend's too, so a cache written by an earlier run is still hit. The
    domain and k are set explicitly: NER_DOMAIN or KNN_K in the environment must not change the prompt.
    """
    from backend.composition import Services
    from backend.settings import Settings

    return Services(Settings(
        openai_base_url=base_url, openai_api_key=api_key, llm_model=model, llm_timeout_s=timeout,
        llm_max_retries=max_retries, llm_max_tokens=max_tokens, llm_structured_output=json_schema,
        llm_prompt_version=prompt_version or default_prompt_version(), llm_cache_dir=cache,
        llm_ledger_file=ledger, knn_k=k, ner_domain=domain))


def _check_inputs(cfg: EvalConfig) -> str:
    """The endpoint's base URL, once the demo mode and the dataset files are known to be usable."""
    if cfg.demos not in ("none", "random", "knn"):
        raise EvalError(f"--demos must be none, random or knn, not {cfg.demos!r}")
    base_url = cfg.base_url or os.environ.get("OPENAI_BASE_URL")
    if not base_url:
        raise EvalError("no LLM endpoint: set OPENAI_BASE_URL (e.g. http://127.0.0.1:8088/v1) or pass --base-url")
    needed = [_split_path(cfg), _split_path(cfg, "train")] if cfg.demos != "none" else [_split_path(cfg)]
    for path in needed:
        if not path.is_file():
            raise EvalError(f"{path} not found")
    return base_url


def _split_path(cfg: EvalConfig, split: str | None = None) -> Path:
    return Path(cfg.data) / f"{split or cfg.split}.jsonl"


def _load_sentences(cfg: EvalConfig) -> tuple[list[Example], list[Example]]:
    """(the sentences to annotate, the train sentences demonstrations are drawn from)."""
    examples = sample(load_split(_split_path(cfg)), cfg.n, cfg.seed)
    train = load_split(_split_path(cfg, "train")) if cfg.demos != "none" else []
    if cfg.demo_pool is not None:
        train = sample(train, cfg.demo_pool, cfg.seed)
    return examples, train


def _demo_source(cfg: EvalConfig, train: list[Example], embedder: Any) -> Any:
    """A k-NN index, random demos or None, as `cfg.demos` says (the annotator asks only `nearest`)."""
    if cfg.demos == "knn":
        return knn_index(train, embedder or CachedEmbedder(cfg.embedding_cache or cfg.cache / "embeddings.npz"),
                         cfg.k)
    if cfg.demos == "random":
        return RandomDemos(train, cfg.seed)
    return None


def run_eval(cfg: EvalConfig, embedder: Any = None) -> dict[str, Any]:
    """Annotate `cfg.n` sentences of the split with the LLM, score them, write OUT/results.json."""
    base_url = _check_inputs(cfg)
    api_key = os.environ.get("OPENAI_API_KEY", "")
    model = resolve_model(base_url, api_key, cfg.model)

    started = time.monotonic()
    examples, train = _load_sentences(cfg)
    schema = build_schema(label_set(examples + train), label_descriptions(cfg.data, cfg.labels_file), cfg.hints)
    cfg.cache.mkdir(parents=True, exist_ok=True)
    demo_source = _demo_source(cfg, train, embedder)
    setup_s = time.monotonic() - started

    cfg.out.mkdir(parents=True, exist_ok=True)
    services = llm_services(base_url=base_url, api_key=api_key, model=model, cache=cfg.cache,
                            ledger=cfg.out / "costs.jsonl", k=cfg.k, timeout=cfg.timeout,
                            max_retries=cfg.max_retries, max_tokens=cfg.max_tokens, json_schema=cfg.json_schema,
                            prompt_version=cfg.prompt_version, domain=cfg.domain)
    annotator = services.annotator(schema, demo_source)
    texts = [ex.text for ex in examples]
    began = time.monotonic()
    outcomes = annotator.annotate_many(texts, concurrency=cfg.concurrency, progress=sys.stderr.isatty())
    annotate_s = time.monotonic() - began

    client = services.llm_client()
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    config.update({"base_url": base_url, "model": model, "template": annotator.template.cache_id,
                   "labels": {lab.value: lab.description for lab in schema.labels},
                   "demo_pool_size": len(train), "json_schema_used": client.schema_supported})
    results: dict[str, Any] = {
        **quality(examples, outcomes),
        "seconds": round(annotate_s, 2), "setup_seconds": round(setup_s, 2),
        "sentences_per_s": _rate(sum(1 for o in outcomes if not o.cached), annotate_s),
        "tokens": token_usage(annotator, texts, outcomes),
        "latency_s": latency_summary(outcomes),
        **failure_counts(outcomes), "client": client.stats,
        "config": config,
    }
    write_predictions(cfg.out / "predictions.jsonl", examples, outcomes)
    write_results(cfg.out / "results.json", results)
    log.info("llm-eval %s %s n=%d demos=%s k=%d hints=%s json=%s: F1 %.4f (P %.4f R %.4f), %d failed, %.1f s",
             Path(cfg.data).name, cfg.split, len(outcomes), cfg.demos, cfg.k, cfg.hints, cfg.json_schema,
             results["f1"], results["precision"], results["recall"], results["failed"], annotate_s)
    return results


def quality(examples: Sequence[Example], outcomes: Sequence[Any]) -> dict[str, Any]:
    """Entity scores on the answered sentences (a failure is left out, never "no entities"), the failure
    counts, and `f1_failed_as_empty`, the stricter view that scores every failure as an empty answer."""
    from training.metrics import entity_scores

    texts = [ex.text for ex in examples]
    ok = [i for i, o in enumerate(outcomes) if o.ok]
    answered = {i: outcomes[i].spans for i in ok}
    scores = entity_scores([examples[i].spans for i in ok], [answered[i] for i in ok], [texts[i] for i in ok]) \
        if ok else {"precision": 0.0, "recall": 0.0, "f1": 0.0, "per_type": {}}
    strict = entity_scores([ex.spans for ex in examples], [answered.get(i, []) for i in range(len(examples))],
                           texts)
    failed = len(outcomes) - len(ok)
    return {"f1": scores["f1"], "precision": scores["precision"], "recall": scores["recall"],
            "failed": failed, "n": len(outcomes), "answered": len(ok),
            "failure_rate": failed / len(outcomes) if outcomes else 0.0,
            "f1_failed_as_empty": strict["f1"], "per_label": scores["per_type"]}


def _rate(fresh: int, seconds: float) -> float | None:
    return round(fresh / seconds, 4) if seconds > 0 and fresh else None


def token_usage(annotator: Any, texts: Sequence[str], outcomes: Sequence[Any]) -> dict[str, Any]:
    """Prompt and completion tokens of the answered sentences, totals and means.

    A cache hit reports zero tokens (it cost nothing now); the table wants what the prompt costs, so a
    hit's tokens are read back from the cached reply."""
    prompt_tokens, completion_tokens = [], []
    for text, outcome in zip(texts, outcomes, strict=True):
        if not outcome.ok:
            continue
        if outcome.cached:
            hit = annotator.cache.get(annotator.cache_key(text, outcome.variant))
            prompt_tokens.append(hit.prompt_tokens if hit else 0)
            completion_tokens.append(hit.completion_tokens if hit else 0)
        else:
            prompt_tokens.append(int(outcome.usage.get("prompt_tokens", 0)))
            completion_tokens.append(int(outcome.usage.get("completion_tokens", 0)))
    return {"prompt_total": int(sum(prompt_tokens)), "completion_total": int(sum(completion_tokens)),
            "prompt_mean": float(np.mean(prompt_tokens)) if prompt_tokens else None,
            "completion_mean": float(np.mean(completion_tokens)) if completion_tokens else None}


def latency_summary(outcomes: Sequence[Any]) -> dict[str, Any]:
    """Seconds per LLM call actually made (cache hits and failures left out)."""
    latencies = [float(o.usage["latency_s"]) for o in outcomes if o.ok and not o.cached and "latency_s" in o.usage]
    return {"calls": len(latencies), "mean": float(np.mean(latencies)) if latencies else None,
            "p50": _percentile(latencies, 50), "p90": _percentile(latencies, 90),
            "max": max(latencies) if latencies else None}


def failure_counts(outcomes: Sequence[Any]) -> dict[str, Any]:
    """Cache hits, failures by reason word and dropped spans by reason."""
    errors = Counter((o.error or "").split(":", 1)[0] for o in outcomes if not o.ok)
    dropped = Counter(reason for o in outcomes for _m, _t, reason in o.dropped)
    return {"cached": sum(1 for o in outcomes if o.cached), "errors": dict(errors), "dropped": dict(dropped)}


def write_predictions(path: Path, examples: Sequence[Example], outcomes: Sequence[Any]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for ex, outcome in zip(examples, outcomes, strict=True):
            fh.write(json.dumps({
                "id": ex.id, "text": ex.text, "ok": outcome.ok, "error": outcome.error,
                "gold": [[s.start, s.end, s.label] for s in ex.spans],
                "pred": [[s.start, s.end, s.label] for s in outcome.spans],
                "dropped": outcome.dropped,
            }, ensure_ascii=False) + "\n")


def write_results(path: Path, results: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, path)  # a results.json is only ever complete: the grid skips on it


# ------------------------------------------------------------------------------------ CLI

def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "llm-eval", help="measure the annotator's prompt on a labeled dataset against OPENAI_BASE_URL",
        description="Annotates --n sentences of a split through the backend's annotator (prompt, parsing, "
                    "grounding, cache) and writes OUT/results.json with F1, failures, tokens and latency.")
    p.add_argument("--data", type=Path, required=True, help="dataset folder with {train,dev,test}.jsonl")
    p.add_argument("--split", default="dev")
    p.add_argument("--n", type=positive_int, default=200, help="sentences to annotate (random sample by --seed)")
    p.add_argument("--demos", choices=["none", "random", "knn"], default="knn",
                   help="demonstrations from the train split: none, random, or k-NN by MiniLM similarity")
    p.add_argument("--k", type=int, default=5, help="demonstrations per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--no-hints", action="store_true", help="label descriptions off: each label is its bare value")
    p.add_argument("--free-text", action="store_true", help="never ask for json_schema output")
    p.add_argument("--labels", type=Path, default=None,
                   help="label descriptions file (default examples/<dataset>/labels.json if present)")
    p.add_argument("--demo-pool", type=positive_int, default=None,
                   help="draw demos from this many train sentences only (default: all)")
    p.add_argument("--base-url", default=None, help="default $OPENAI_BASE_URL")
    p.add_argument("--model", default=None, help="default $LLM_MODEL, else the endpoint's first model")
    p.add_argument("--prompt-version", default=None,
                   help="prompt template ner.<version> (default: the backend's, e.g. v1)")
    p.add_argument("--domain", default=None, help="domain phrase for the prompt, e.g. 'biomedical abstracts'")
    p.add_argument("--concurrency", type=positive_int, default=1, help="LLM calls in flight")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds per LLM call")
    p.add_argument("--max-retries", type=int, default=2)
    p.add_argument("--max-tokens", type=positive_int, default=256)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="reply and embedding cache folder")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    return EvalConfig(data=args.data, out=args.out, split=args.split, n=args.n, demos=args.demos, k=args.k,
                      seed=args.seed, hints=not args.no_hints, json_schema=not args.free_text,
                      labels_file=args.labels, demo_pool=args.demo_pool, base_url=args.base_url,
                      model=args.model, prompt_version=args.prompt_version, domain=args.domain,
                      concurrency=args.concurrency, timeout=args.timeout, max_retries=args.max_retries,
                      max_tokens=args.max_tokens, cache=args.cache)


def run(args: argparse.Namespace) -> int:
    try:
        results = run_eval(config_from_args(args))
    except (EvalError, FileNotFoundError, ValueError) as exc:
        print(f"llm-eval: {exc}", file=sys.stderr)
        return 2
    summary = {k: results[k] for k in ("f1", "precision", "recall", "failed", "n", "seconds")}
    print(json.dumps(summary, indent=2))
    return 0
