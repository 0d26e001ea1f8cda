"""Shared fixtures. Integration fixtures start the real services as subprocesses and stop them after."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.settings import Settings
from llmaaa import services
from llmaaa.services import LabelStudioConfig, Service, free_port, start_fake_llm, start_label_studio

REPO = Path(__file__).resolve().parent.parent
DATA_ROOT = Path(os.environ.get("LLMAAA_SHARED_DATA", REPO.parent / "shared" / "data"))
BC5CDR = DATA_ROOT / "bc5cdr"
BC5CDR_LABELS = REPO / "examples" / "bc5cdr" / "labels.json"
# Pinned in the loop tests' service env, which otherwise inherits the caller's ACQUISITION_STRATEGY.
DEFAULT_ACQUISITION_STRATEGY: str = Settings.model_fields["acquisition_strategy"].default


def in_ci() -> bool:
    """CI sets CI=true (.ci/run does when the CI system does not)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `llm` need the real local LLM: skipped where it is not installed, but failed in CI,
    where `.ci/run` installs it, so a broken `make install-llm` cannot hide behind a skip."""
    if item.get_closest_marker("llm") is None:
        return
    from llmaaa.demo import local_llm_missing

    missing = local_llm_missing()
    if missing is None:
        return
    if in_ci():
        pytest.fail(f"CI runs the real-model tests, but {missing}", pytrace=False)
    pytest.skip(f"the real local LLM is not installed here: {missing}")


@pytest.fixture(scope="session")
def bc5cdr_dir() -> Path:
    if not (BC5CDR / "dev.jsonl").exists():
        pytest.fail(f"BC5CDR not found at {BC5CDR}: CI expects ../shared/data beside the checkout")
    return BC5CDR


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioConfig]:
    """A real Label Studio 1.23.2 (SQLite) from `.venv-ls`, on a free port, for the whole session."""
    cfg = LabelStudioConfig(data_dir=tmp_path_factory.mktemp("label-studio"), port=free_port())
    svc = start_label_studio(cfg)
    try:
        yield cfg
    finally:
        svc.stop()


def start_backend(log_dir: Path, llm_url: str, ls: LabelStudioConfig | None, state_dir: Path,
                  **env: str) -> Service:
    """`llmaaa serve --dev` on the LLM at `llm_url` (and Label Studio `ls`), state in `state_dir`."""
    full_env = {
        "OPENAI_BASE_URL": llm_url,
        "OPENAI_API_KEY": "sk-test-secret-never-logged",
        "LLM_MODEL": "simulated-llm",
        "LLMAAA_DATA_DIR": str(state_dir),
        "LLM_TIMEOUT_S": "5",
        "LLM_MAX_RETRIES": "2",
        **({"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.token} if ls else {}),
        **env,
    }
    return services.start_backend(full_env, log_dir, "--dev")


def wait_for(what: str, check: Callable[[], Any], timeout: float = 300.0, interval: float = 1.0) -> Any:
    """`check()`'s first truthy value, polled every `interval` s; an AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture(scope="session")
def fake_llm(bc5cdr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The simulated LLM at noise 0: it answers each sentence's gold entities."""
    svc = start_fake_llm(bc5cdr_dir, tmp_path_factory.mktemp("fake-llm"), "--noise", "0", "--seed", "1")
    try:
        yield svc
    finally:
        svc.stop()
