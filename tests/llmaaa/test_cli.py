"""The `llmaaa` command line: one convention (docs/architecture.md, "CLI conventions"), old spellings kept."""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from typing import Any

import pytest

from llmaaa.cli import COMMAND_MODULES, build_parser, kwargs_for


def _commands(module: str | None = None) -> dict[str, argparse.ArgumentParser]:
    """Subcommand parsers, of one module or of the whole CLI."""
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    for name in [module] if module else COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return dict(sub.choices)


def _parsed(argv: list[str]) -> dict[str, Any]:
    return {k: v for k, v in vars(build_parser().parse_args(argv)).items() if k != "func"}


@pytest.mark.parametrize(("old", "new"), [
    (["extract", "--model", "m", "--input", "docs", "--output", "o.jsonl"],
     ["extract", "--model", "m", "--input", "docs", "--out", "o.jsonl"]),
    (["export-model", "v0001-20260101T000000Z", "--out", "d"],
     ["export-model", "--model", "v0001-20260101T000000Z", "--out", "d"]),
    (["import-docs", "docs", "--project", "3"], ["import-docs", "--input", "docs", "--project", "3"]),
])
def test_old_spellings_parse_like_the_new_ones_and_warn(old: list[str], new: list[str],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert _parsed(old) == _parsed(new)
    err = capsys.readouterr().err
    assert "deprecated" in err and err.count("warning") == 1  # only for the old spelling
    help_text = _commands()[new[0]].format_help()
    assert "--output" not in help_text and "deprecated" not in help_text  # hidden from --help


def test_old_and_new_spelling_together_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["export-model", "vA", "--model", "vB", "--out", "d"])
    assert exit_info.value.code == 2 and "not allowed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["extract", "--model", "m", "--input", "i"])  # no --out at all
    assert "--out is required" in capsys.readouterr().err


def test_no_command_takes_visible_positional_arguments() -> None:
    for name, parser in _commands().items():
        positionals = [a.dest for a in parser._actions if not a.option_strings and a.help != argparse.SUPPRESS]
        assert positionals == [], name


def test_every_command_is_listed_in_the_cli_docstrings() -> None:
    import llmaaa.cli

    for name in _commands():
        assert f"\n  {name} " in llmaaa.cli.__doc__, name
    for module in ("llmaaa.backend_cli", "llmaaa.docs_cli"):
        doc = importlib.import_module(module).__doc__ or ""
        for name in _commands(module):
            assert f"\n  {name} " in doc, (module, name)


@pytest.mark.parametrize("command", ["import-docs", "extract", "export-model", "acquire", "status"])
@pytest.mark.parametrize("bad", ["0", "-1", "٣", "1e3", " 3", "99999999999", "2147483648", "true"])
def test_project_options_take_only_positive_ids(command: str, bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--project", bad])
    assert exit_info.value.code == 2 and "--project" in capsys.readouterr().err


def test_project_ids_in_range_are_accepted() -> None:
    assert _parsed(["status", "--project", "2147483647"])["project"] == 2147483647


@pytest.mark.parametrize(("argv", "option"), [
    (["llm-eval", "--data", "d", "--out", "o", "--n", "0"], "--n"),
    (["llm-eval", "--data", "d", "--out", "o", "--concurrency", "two"], "--concurrency"),
    (["fake-llm", "--data", "d", "--port", "1", "--noise", "1.5"], "--noise"),
    (["fake-llm", "--data", "d", "--port", "1", "--fail-rate", "nan"], "--fail-rate"),
    (["fake-llm", "--data", "d", "--port", "1", "--malformed-rate", "lots"], "--malformed-rate"),
])
def test_counts_and_rates_are_checked_by_the_shared_option_types(argv: list[str], option: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2 and f"argument {option}" in capsys.readouterr().err


def test_rates_at_the_ends_of_the_unit_interval_are_accepted() -> None:
    parsed = _parsed(["fake-llm", "--data", "d", "--port", "1", "--noise", "0", "--fail-rate", "1"])
    assert (parsed["noise"], parsed["fail_rate"]) == (0.0, 1.0)


@dataclass
class _Options:
    model: str
    out: str = "-"
    batch_size: int = 32


def test_kwargs_for_passes_options_by_name_to_functions_and_dataclasses() -> None:
    args = argparse.Namespace(model="m", out="o", batch_size=8, verbose=True, func=print)
    assert _Options(**kwargs_for(_Options, args)) == _Options("m", "o", 8)

    def run(model: str, out: str, extra: int = 0) -> None: ...

    assert kwargs_for(run, args, out="x", extra=1) == {"model": "m", "out": "x", "extra": 1}
