"""A SIMULATED OpenAI-compatible chat server that answers NER prompts with the simulated teacher.

Endpoints (shapes as the official `openai` client parses them):
- `POST /v1/chat/completions`: reads the ner.v2 (or ner.v1) prompt (`read_prompt`), answers
  `{"entities": [{"span", "type"}]}`;
- `GET /v1/models`, `GET /v1/models/<id>`: one model, `owned_by: "llmaaa-simulation"`;
- `GET /v1/simulation/stats`: counters of requests and injected faults; `POST /v1/simulation/reset`;
- `GET /health`: readiness, open even when an API key is required.

Fault injection (`FaultConfig`), drawn per REQUEST from its own seeded RNG (independent of the noise
model's per-sentence RNG), so a retry of a failed request may succeed:
- `fail_rate`: the request fails: 50% HTTP 429 with `Retry-After`, 30% HTTP 500, 20% a hang of
  `hang_s` seconds (longer than a client timeout) before a normal answer;
- `malformed_rate`: the reply content is broken: 30% prose around the JSON, 30% a ```json code fence,
  20% truncated JSON (finish_reason "length"), 20% prose with no JSON at all. The first two are
  recoverable by a tolerant parser, the last two are not. Malformed replies are also sent when the
  request asked for json_schema output: a stress test of the client, not a claim about real servers.
- `latency_ms` (+ uniform jitter up to `latency_jitter_ms`) before every answer, 500s and hangs included
  (not before 429s, 400s and 401s, which real servers return at once).
Unless given explicitly, `fail_rate = 0.05 * noise` and `malformed_rate = 0.1 * noise` (`for_noise`).
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from flask import Flask, Response, jsonify, request

from llmaaa.simulation.teacher import (
    PromptFormatError,
    SimulatedTeacher,
    demo_surface_forms,
    message_text,
    parse_prompt,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "simulated-llm"
OWNED_BY = "llmaaa-simulation"
FAIL_RATE_PER_NOISE = 0.05
MALFORMED_RATE_PER_NOISE = 0.1
# Splits of a failure and of a malformed reply (cumulative order as listed; see the module docstring).
FAIL_SPLIT: tuple[tuple[str, float], ...] = (("rate_limited", 0.5), ("server_error", 0.3), ("hang", 0.2))
MALFORMED_SPLIT: tuple[tuple[str, float], ...] = (
    ("prose_json", 0.3), ("code_fence", 0.3), ("truncated", 0.2), ("no_json", 0.2))
_NO_JSON_PROSE = (
    "I have read the text carefully. The entities are the names of the requested types mentioned in it.",
    "Sure! The text mentions several entities of the requested types, as highlighted above.",
    "As an AI language model, I would classify the mentions according to the listed types.",
)


@dataclass(frozen=True)
class FaultConfig:
    """What the simulated server does besides answering. Rates are fractions of requests."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    fail_rate: float = 0.0
    malformed_rate: float = 0.0
    hang_s: float = 60.0
    retry_after_s: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("fail_rate", "malformed_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if min(self.latency_ms, self.latency_jitter_ms, self.hang_s, self.retry_after_s) < 0:
            raise ValueError("latencies, hang_s and retry_after_s must be >= 0")

    @classmethod
    def for_noise(cls, noise: float, fail_rate: float | None = None, malformed_rate: float | None = None,
                  **others: Any) -> FaultConfig:
        """Fault rates derived from the noise knob unless given: 0.05·noise failures, 0.1·noise malformed."""
        if fail_rate is None:
            fail_rate = FAIL_RATE_PER_NOISE * noise
        if malformed_rate is None:
            malformed_rate = MALFORMED_RATE_PER_NOISE * noise
        return cls(fail_rate=fail_rate, malformed_rate=malformed_rate, **others)


def _pick(u: float, split: tuple[tuple[str, float], ...]) -> str:
    acc = 0.0
    for name, share in split:
        acc += share
        if u < acc:
            return name
    return split[-1][0]


def estimate_tokens(text: str) -> int:
    """A rough token count (~4 characters a token), so that cost ledgers have numbers to add up."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def malform(content: str, kind: str, u: float) -> str:
    """Break a JSON reply the way real LLMs do; `u` in [0, 1) picks among variants."""
    if kind == "prose_json":
        return f"Here are the entities I found in the text:\n{content}\nLet me know if you need more help."
    if kind == "code_fence":
        return f"```json\n{content}\n```"
    if kind == "truncated":
        # Cut strictly inside the JSON: never a complete object.
        return content[: max(1, min(len(content) - 1, int(len(content) * (0.3 + 0.6 * u))))]
    return _NO_JSON_PROSE[int(u * len(_NO_JSON_PROSE))]


def _json_string(line: str) -> str | None:
    """The text a ner.v2 `Input: ` line encodes (one JSON string literal), or None if it is no such line."""
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def read_prompt(messages: Any) -> tuple[str, list[tuple[str, str]]]:
    """(query, [(demo text, demo output JSON)]) from ner.v2 chat messages, else as ner.v1 (`parse_prompt`).

    ner.v2 (docs/architecture.md, "Prompt contract"): in the last user message, every line that starts
    with `Input: ` holds one JSON string literal (the text, newlines escaped), and the line after a
    demo's input is `Output: <json>`. The query is the last such input. Lines are split on "\\n" only:
    the template escapes every other line break, and a text cannot hold a raw "\\n".
    """
    users = [m for m in messages if isinstance(m, Mapping) and m.get("role") == "user"]
    if users:
        lines = message_text(users[-1].get("content")).split("\n")
        at = [i for i, line in enumerate(lines) if line.startswith("Input: ")]
        decoded = [_json_string(lines[i][len("Input: "):]) for i in at]
        texts = [t for t in decoded if t is not None]
        if at and len(texts) == len(at):
            demos = []
            for i, text in zip(at[:-1], texts[:-1], strict=True):
                following = lines[i + 1] if i + 1 < len(lines) else ""
                if following.startswith("Output: "):
                    demos.append((text, following[len("Output: "):].strip()))
            return texts[-1], demos
    return parse_prompt(messages)


def _error(status: int, message: str, typ: str, code: str | None, param: str | None = None) -> Response:
    """An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""
    resp = jsonify({"error": {"message": message, "type": typ, "param": param, "code": code}})
    resp.status_code = status
    return resp


class _State:
    """Counters and the fault RNG, shared by the server's threads."""

    def __init__(self, seed: int) -> None:
        self.lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self.seed = seed
        # A string seed: independent of the noise model's blake2b(seed, text) streams.
        self.rng = random.Random(f"llmaaa-simulation-faults:{seed}")

    def count(self, *keys: str) -> None:
        with self.lock:
            for key in keys:
                self.stats[key] += 1

    def draw(self, n: int) -> list[float]:
        with self.lock:
            return [self.rng.random() for _ in range(n)]

    def reset(self) -> None:
        with self.lock:
            self.stats.clear()
            self.rng = random.Random(f"llmaaa-simulation-faults:{self.seed}")


@dataclass
class _SimulatedLLM:
    """What the routes do, one small method per step: auth, request checks, injected faults, the answer."""

    teacher: SimulatedTeacher
    faults: FaultConfig
    state: _State
    model: str
    json_schema: bool
    api_key: str | None
    sleep: Callable[[float], None]
    created: int = field(default_factory=lambda: int(time.time()))

    def unauthorized(self) -> Response | None:
        if not self.api_key:
            return None
        header = request.headers.get("Authorization", "")
        if hmac.compare_digest(header.encode(), f"Bearer {self.api_key}".encode()):
            return None
        self.state.count("unauthorized")
        return _error(401, "Incorrect API key provided (simulated LLM).", "invalid_request_error",
                      "invalid_api_key")

    def model_card(self) -> dict[str, Any]:
        return {"id": self.model, "object": "model", "created": self.created, "owned_by": OWNED_BY}

    def bad_request(self, body: Any) -> Response | None:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            self.state.count("bad_request")
            return _error(400, "'messages' must be a non-empty list.", "invalid_request_error", None, "messages")
        if body.get("stream"):
            self.state.count("bad_request")
            return _error(400, "The simulated LLM does not stream.", "invalid_request_error", None, "stream")
        fmt = body.get("response_format") or {}
        if (fmt.get("type") if isinstance(fmt, Mapping) else None) == "json_schema" and not self.json_schema:
            self.state.count("rejected_json_schema")
            return _error(400, "response_format 'json_schema' is not supported by this server (simulated).",
                          "invalid_request_error", None, "response_format")
        return None

    def injected_failure(self, u_fail: float, u_fail_kind: float, u_jitter: float) -> Response | None:
        """A simulated 429, hang or 500, decided per request; the latency is slept here either way."""
        failure = _pick(u_fail_kind, FAIL_SPLIT) if u_fail < self.faults.fail_rate else None
        if failure == "rate_limited":
            self.state.count("fault_rate_limited")
            resp = _error(429, "Rate limit reached for requests (simulated).", "requests", "rate_limit_exceeded")
            resp.headers["Retry-After"] = f"{self.faults.retry_after_s:g}"
            return resp
        delay = (self.faults.latency_ms + u_jitter * self.faults.latency_jitter_ms) / 1000
        if failure == "hang":
            self.state.count("fault_hang")
            delay += self.faults.hang_s
        if delay > 0:
            self.sleep(delay)
        if failure == "server_error":
            self.state.count("fault_server_error")
            return _error(500, "The server had an error while processing your request (simulated).",
                          "server_error", None)
        return None

    def entities(self, messages: list[Any]) -> list[dict[str, str]]:
        try:
            query, demos = read_prompt(messages)
            entities = self.teacher.answer(query, demo_surface_forms(demos))
        except PromptFormatError as exc:
            log.warning("simulated LLM: cannot read the prompt (%s); answering no entities", exc)
            self.state.count("unreadable_prompt")
            return []
        if entities is None:
            log.warning("simulated LLM: unknown text %r; answering no entities", query[:80])
            self.state.count("unknown_text")
            return []
        return entities

    def content(self, body: dict[str, Any], u_bad: float, u_bad_kind: float, u_variant: float) -> tuple[str, str]:
        """The reply text and its finish_reason, after injected malformations and the max_tokens cut."""
        content = json.dumps({"entities": self.entities(body["messages"])}, ensure_ascii=False)
        finish_reason = "stop"
        if u_bad < self.faults.malformed_rate:
            kind = _pick(u_bad_kind, MALFORMED_SPLIT)
            self.state.count(f"malformed_{kind}")
            content = malform(content, kind, u_variant)
            finish_reason = "length" if kind == "truncated" else "stop"
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(max_tokens, int) and max_tokens > 0 and estimate_tokens(content) > max_tokens:
            content, finish_reason = content[: max_tokens * 4], "length"
            self.state.count("cut_by_max_tokens")
        return content, finish_reason

    def chat_completion(self) -> Response:
        if (denied := self.unauthorized()) is not None:
            return denied
        self.state.count("requests")
        body = request.get_json(silent=True)
        if (bad := self.bad_request(body)) is not None:
            return bad
        # One draw per request, always the same count: fault decisions are per request, not per text.
        u_fail, u_fail_kind, u_bad, u_bad_kind, u_variant, u_jitter = self.state.draw(6)
        if (failed := self.injected_failure(u_fail, u_fail_kind, u_jitter)) is not None:
            return failed
        content, finish_reason = self.content(body, u_bad, u_bad_kind, u_variant)
        self.state.count("answered")
        # ~4 tokens of chat framing per message, as OpenAI counts them.
        prompt_tokens = sum(estimate_tokens(message_text(m.get("content"))) + 4
                            for m in body["messages"] if isinstance(m, Mapping))
        completion_tokens = estimate_tokens(content)
        return jsonify({
            "id": f"chatcmpl-sim-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": str(body.get("model") or self.model), "system_fingerprint": "llmaaa-simulation",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                         "logprobs": None, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })


def create_app(teacher: SimulatedTeacher, faults: FaultConfig | None = None, *, model: str = DEFAULT_MODEL,
               json_schema: bool = True, api_key: str | None = None,
               sleep: Callable[[float], None] = time.sleep) -> Flask:
    """The simulated LLM as a Flask app.

    `json_schema=False` answers HTTP 400 to `response_format: json_schema` (a server without structured
    output); `api_key` makes `Authorization: Bearer <key>` mandatory (401 otherwise).
    """
    faults = faults or FaultConfig()
    sim = _SimulatedLLM(teacher, faults, _State(faults.seed), model, json_schema, api_key, sleep)
    app = Flask("llmaaa.simulation")
    app.config["SIMULATION"] = {"teacher": teacher, "faults": faults, "state": sim.state}
    app.post("/v1/chat/completions")(sim.chat_completion)
    _register_models_and_health(app, sim)
    return app


def _register_models_and_health(app: Flask, sim: _SimulatedLLM) -> None:
    @app.get("/v1/models")
    def list_models() -> Response:
        if (denied := sim.unauthorized()) is not None:
            return denied
        return jsonify({"object": "list", "data": [sim.model_card()]})

    @app.get("/v1/models/<path:model_id>")
    def get_model(model_id: str) -> Response:
        if (denied := sim.unauthorized()) is not None:
            return denied
        if model_id != sim.model:
            return _error(404, f"The model '{model_id}' does not exist (simulated LLM serves '{sim.model}').",
                          "invalid_request_error", "model_not_found", "model")
        return jsonify(sim.model_card())

    @app.get("/health")
    def health() -> Response:  # open even with an API key: for readiness checks
        return jsonify({"status": "ok", "simulation": True})

    @app.get("/v1/simulation/stats")
    def stats() -> Response:
        with sim.state.lock:
            counters = dict(sim.state.stats)
        t = sim.teacher
        return jsonify({"simulation": True, "noise": t.noise, "seed": t.seed, "demo_aware": t.demo_aware,
                        "known_texts": len(t), "json_schema": sim.json_schema, "faults": asdict(sim.faults),
                        "counters": counters})

    @app.post("/v1/simulation/reset")
    def reset() -> Response:
        sim.state.reset()
        return jsonify({"reset": True})
