"""The `llmaaa` command. Each feature module registers its own subcommands.

Commands (`llmaaa COMMAND --help` for options):
  serve          run the Label Studio ML backend (LLM pre-annotations)          llmaaa.backend_cli
  worker         an RQ worker that runs retrain jobs                            llmaaa.backend_cli
  setup-project  create/update a Label Studio NER project wired to the backend  llmaaa.backend_cli
  acquire        one acquisition round: score, select, LLM-annotate, reorder    llmaaa.backend_cli
  status         model versions, training metrics and job state of a project    llmaaa.backend_cli
  costs          LLM calls, tokens and cost from the ledger                     llmaaa.backend_cli
  import-docs    split raw documents into passage tasks and import them         llmaaa.docs_cli
  extract        run a trained student over documents and write its entities    llmaaa.docs_cli
  export-model   write a model version as a Hugging Face checkpoint             llmaaa.docs_cli
  fake-llm       serve the SIMULATED OpenAI-compatible LLM                      llmaaa.simulation.cli
  simulate       the offline LLMaAA loop with a simulated teacher               llmaaa.simulate
  demo           Label Studio + simulated LLM + backend on BC5CDR               llmaaa.demo
  demo-annotate  submit gold annotations on a few demo tasks                    llmaaa.demo
  local-llm      serve a real local LLM (GGUF, llama.cpp), OpenAI-compatible    llmaaa.local_llm
  llm-eval       measure the annotator's prompt on a labelled dataset           llmaaa.llm_eval

Conventions (docs/architecture.md, "CLI conventions"): named options only, `--out` for what a command
writes, `--input` for the documents it reads, `--model` for a model, `--project` for a project id;
old spellings stay as hidden, deprecated aliases (`deprecated_alias`, `deprecated_positional`).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

# Each module defines `register(subparsers)`; its parsers set `func(args) -> int`.
COMMAND_MODULES: tuple[str, ...] = (
    "llmaaa.simulation.cli",  # fake-llm
    "llmaaa.backend_cli",  # serve, worker, setup-project, acquire, status, costs
    "llmaaa.simulate",  # simulate
    "llmaaa.demo",  # demo, demo-annotate
    "llmaaa.docs_cli",  # import-docs, extract, export-model
    "llmaaa.local_llm",  # local-llm
    "llmaaa.llm_eval",  # llm-eval
)


# ------------------------------------------------------------------------------------------ option types
def positive_int(value: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return n


def fraction(value: str) -> float:
    """argparse type: a number in [0, 1] (a rate or a noise level)."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.0 <= x <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{value} is not in [0, 1]")
    return x


def project_id(value: str) -> int:
    """argparse type: a Label Studio project id, ASCII digits only (int() would also take '٣' or ' 3')."""
    from llmaaa.extract import MAX_PROJECT_ID

    if not re.fullmatch(r"[0-9]{1,10}", value) or not 1 <= int(value) <= MAX_PROJECT_ID:
        raise argparse.ArgumentTypeError(f"{value[:40]!r} is not a project id (an integer from 1 to "
                                         f"{MAX_PROJECT_ID})")
    return int(value)


# ------------------------------------------------------------------------------------------ deprecated spellings
def _warn_deprecated(old: str, new: str) -> None:
    print(f"llmaaa: warning: {old} is deprecated, use {new} (the old spelling still works for now)",
          file=sys.stderr)


class _DeprecatedAlias(argparse.Action):
    """Stores into the canonical option's `dest` and warns; absent (None) values are ignored, so a
    hidden optional positional never overwrites the canonical option."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str = "", **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if values is None:
            return
        _warn_deprecated(option_string or f"the positional {self.metavar or self.dest.upper()}", self.new)
        setattr(namespace, self.dest, values)


def deprecated_alias(group: Any, old: str, new: str, dest: str, **kwargs: Any) -> None:
    """A hidden option `old` that feeds `dest` like `new` does. Put `new` and the alias in one mutually
    exclusive group (required if `new` is) so that either spelling satisfies it."""
    group.add_argument(old, dest=dest, action=_DeprecatedAlias, new=new, help=argparse.SUPPRESS, **kwargs)


def deprecated_positional(group: Any, new: str, dest: str, metavar: str, **kwargs: Any) -> None:
    """A hidden optional positional that feeds `dest` like option `new` (for commands that took it
    positionally); `group` as for `deprecated_alias`."""
    group.add_argument(dest, nargs="?", action=_DeprecatedAlias, new=new, metavar=metavar,
                       help=argparse.SUPPRESS, **kwargs)


# ------------------------------------------------------------------------------------------ args -> calls
def kwargs_for(target: Callable[..., Any], args: argparse.Namespace, **overrides: Any) -> dict[str, Any]:
    """The parsed options that `target` (a function or a dataclass) takes, by name, plus `overrides`.

    Parsers name each option's `dest` after the parameter or field it feeds, so a command passes its
    options on with `target(**kwargs_for(target, args))` instead of copying them one by one.
    """
    params = inspect.signature(target).parameters
    chosen = {k: v for k, v in vars(args).items() if k in params and k not in overrides}
    return {**chosen, **overrides}


# ------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmaaa", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
