"""`llmaaa demo --llm {simulated,local}` and `make demo LLM=...`: which LLM process the demo plans, and what the
backend and the worker are told, without starting anything (the real run is `make demo LLM=local`)."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest

from backend.settings import Settings
from llmaaa import demo, local_llm
from llmaaa.services import LabelStudioConfig

REPO = Path(__file__).resolve().parents[2]


def demo_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    demo.register(parser.add_subparsers())
    return parser.parse_args(["demo", "--llm-port", "9555", *argv])


def command_after(command: list[str], subcommand: str) -> list[str]:
    """The arguments of `llmaaa <subcommand> ...` in a planned command line."""
    assert subcommand in command, command
    return command[command.index(subcommand) + 1:]


def test_default_is_the_simulation_with_its_large_first_batch() -> None:
    args = demo_args()
    plan = demo.plan_llm(args)
    assert args.llm == "simulated" and plan.kind == "simulated"
    assert "fake-llm" in plan.command and "local-llm" not in plan.command
    assert plan.backend_env["LLM_MODEL"] == "simulated-llm"
    assert demo.first_batch_size(args) == 50
    assert "SIMULATION" in demo.ready_headline(plan)


def test_local_plans_one_bounded_local_llm_server_and_points_the_backend_at_it() -> None:
    args = demo_args("--llm", "local")
    plan = demo.plan_llm(args)
    assert plan.kind == "local" and plan.service_name == "local-llm"
    # The planned command line is one the real `llmaaa local-llm` parser accepts, with bounded concurrency.
    parser = argparse.ArgumentParser()
    local_llm.register(parser.add_subparsers())
    served = parser.parse_args(["local-llm", *command_after(plan.command, "local-llm")])
    assert served.func is local_llm.run
    assert (served.port, served.concurrency, served.threads) == (9555, 1, 1)
    assert served.model_name == demo.LOCAL_MODEL_ID == plan.backend_env["LLM_MODEL"]
    assert plan.base_url == plan.backend_env["OPENAI_BASE_URL"] == "http://127.0.0.1:9555/v1"
    # Seconds a call: a timeout far above the simulation's 30 s, few retries, one call in flight per lane.
    settings = Settings(**{k.lower(): v for k, v in plan.backend_env.items()})
    assert settings.llm_timeout_s >= 120 and settings.llm_max_retries <= 1
    assert settings.llm_concurrency == settings.llm_interactive_concurrency == served.concurrency
    # The model loads before it answers /v1/models: the wait is longer than the simulation's.
    assert plan.ready_timeout_s > demo.plan_llm(demo_args()).ready_timeout_s
    assert demo.first_batch_size(args) == 10 < demo.first_batch_size(demo_args())
    headline = demo.ready_headline(plan)
    assert "REAL" in headline and "Gemma 3 270M" in headline and "SLOW" in headline
    assert "SIMULATION" not in headline


def test_local_threads_and_an_explicit_first_batch_are_honoured() -> None:
    args = demo_args("--llm", "local", "--llm-threads", "2", "--preannotate", "3")
    assert command_after(demo.plan_llm(args).command, "--threads")[0] == "2"
    assert "2 threads" in demo.plan_llm(args).description
    assert demo.first_batch_size(args) == 3
    with pytest.raises(SystemExit):
        demo_args("--llm", "local", "--llm-threads", "0")
    with pytest.raises(SystemExit):
        demo_args("--llm", "gpt")


@pytest.mark.parametrize("kind", demo.LLM_KINDS)
def test_backend_and_worker_env_are_settings_the_code_reads(kind: str, tmp_path: Path) -> None:
    args = demo_args("--llm", kind, "--state", str(tmp_path))
    plan = demo.plan_llm(args)
    env = demo.backend_env(args, plan, LabelStudioConfig(data_dir=tmp_path / "ls"))
    known = {name.upper() for name in Settings.model_fields} | {"LABEL_STUDIO_URL"}
    assert not set(env) - known, set(env) - known
    assert env["OPENAI_BASE_URL"] == plan.base_url and env["LLM_MODEL"] == plan.backend_env["LLM_MODEL"]
    settings = Settings(**{k.lower(): v for k, v in env.items()})
    # An acquisition round LLM-annotates its picks: fewer with the slow local model.
    assert settings.acquisition_batch == (20 if kind == "simulated" else 10)


def test_local_without_the_extra_stops_before_starting_anything(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    real_find_spec = demo.importlib.util.find_spec
    monkeypatch.setattr(demo.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llama_cpp" else real_find_spec(name, *a))
    assert "make install-llm" in (demo.local_llm_missing() or "")
    started: list[object] = []
    args = demo_args("--llm", "local", "--state", str(tmp_path / "state"))
    with pytest.raises(SystemExit, match="make install-llm"):
        demo._start_services(args, demo.plan_llm(args), started)  # type: ignore[arg-type]
    assert started == [] and not (tmp_path / "state").exists()


@pytest.mark.parametrize(("llm", "installs_extra"), [("simulated", False), ("local", True)])
def test_make_demo_passes_llm_and_installs_the_extra_for_local(llm: str, installs_extra: bool) -> None:
    # -n: print the recipes, run nothing; -B: as on a clean machine, every stamp out of date.
    out = subprocess.run(["make", "-n", "-B", "demo", f"LLM={llm}"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    assert f"-m llmaaa.cli demo --llm {llm}" in out
    assert ("'.[dev,llm]'" in out) is installs_extra
    assert out.index("'.[dev]'") < out.rindex("llmaaa.cli demo")  # installs first
