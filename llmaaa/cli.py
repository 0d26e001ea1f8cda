"""The `llmaaa` command. Each feature module registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Each module defines `register(subparsers)`; its parsers set `func(args) -> int`.
COMMAND_MODULES: tuple[str, ...] = (
    "llmaaa.simulation.cli",  # fake-llm
    "backend.cli",  # serve, setup-project, costs
    "llmaaa.simulate",  # simulate
    "llmaaa.demo",  # demo
    "llmaaa.docs_cli",  # import-docs, extract, export-model
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmaaa", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # one line per HTTP request drowns progress bars
        for noisy in ("httpx", "httpx2", "werkzeug"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
