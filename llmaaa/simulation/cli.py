"""`llmaaa fake-llm`: serve the SIMULATED LLM (gold labels + seeded noise) over an OpenAI-compatible API."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from flask import Flask

from llmaaa.cli import fraction
from llmaaa.services import serve_until_interrupted
from llmaaa.simulation.server import DEFAULT_MODEL, FaultConfig, create_app
from llmaaa.simulation.teacher import SimulatedTeacher
from training.data import Example, load_split

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "fake-llm", help="serve a SIMULATED OpenAI-compatible LLM that answers from gold labels with noise",
        description="A simulation, not a model: answers NER prompts for sentences of --data with their gold "
                    "entities, corrupted by a seeded noise model (docs/simulated-llm.md).")
    p.add_argument("--data", type=Path, required=True, help="dataset folder with {train,dev,test}.jsonl")
    p.add_argument("--splits", default="train,dev,test",
                   help="comma-separated splits to load (missing ones skipped)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--noise", type=fraction, default=0.3, help="teacher noise in [0, 1] (0: gold answers)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise model and of the fault injection")
    p.add_argument("--demo-aware", action="store_true",
                   help="simulation ASSUMPTION: entities seen in the prompt's demonstrations are right")
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay before each answer")
    p.add_argument("--latency-jitter-ms", type=float, default=0.0,
                   help="extra uniform random delay, up to this")
    p.add_argument("--fail-rate", type=fraction, default=None,
                   help="fraction of requests failing (429 / 500 / hang); default 0.05 * noise")
    p.add_argument("--malformed-rate", type=fraction, default=None,
                   help="fraction of replies with broken JSON; default 0.1 * noise")
    p.add_argument("--hang-s", type=float, default=60.0, help="how long a 'hang' fault sleeps")
    p.add_argument("--retry-after-s", type=float, default=1.0, help="Retry-After of simulated 429s")
    p.add_argument("--no-json-schema", action="store_true",
                   help="answer HTTP 400 to response_format json_schema (a server without structured output)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (default: no check)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model id listed by /v1/models")
    p.set_defaults(func=run)


def load_examples(data: Path, splits: str) -> list[Example]:
    examples: list[Example] = []
    for name in (s.strip() for s in splits.split(",") if s.strip()):
        path = data / f"{name}.jsonl"
        if path.exists():
            examples.extend(load_split(path))
        else:
            log.warning("simulated LLM: no split %s", path)
    if not examples:
        raise SystemExit(f"no sentences loaded from {data} (splits {splits})")
    return examples


def build_app(args: argparse.Namespace) -> Flask:
    """The app `run` serves, built from parsed arguments (separate so tests need no socket)."""
    teacher = SimulatedTeacher(load_examples(args.data, args.splits), noise=args.noise, seed=args.seed,
                               demo_aware=args.demo_aware)
    faults = FaultConfig.for_noise(args.noise, fail_rate=args.fail_rate, malformed_rate=args.malformed_rate,
                                   latency_ms=args.latency_ms, latency_jitter_ms=args.latency_jitter_ms,
                                   hang_s=args.hang_s, retry_after_s=args.retry_after_s, seed=args.seed)
    log.info("SIMULATED LLM (not a real model): %d known sentences, labels %s, noise %g, seed %d, "
             "demo_aware %s, faults %s, json_schema %s", len(teacher), ",".join(teacher.labels), args.noise,
             args.seed, args.demo_aware, faults, not args.no_json_schema)
    return create_app(teacher, faults, model=args.model, json_schema=not args.no_json_schema,
                      api_key=args.api_key)


def run(args: argparse.Namespace) -> int:
    serve_until_interrupted(build_app(args), args.host, args.port,
                            lambda port: log.info("simulated LLM serving at http://%s:%d/v1", args.host, port))
    return 0
