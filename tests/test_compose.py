"""No Docker engine runs here, so the compose file is checked by parsing it against the code it runs."""

from __future__ import annotations

from pathlib import Path

import yaml

from backend.settings import Settings
from llmaaa.services import LabelStudioConfig, label_studio_env

REPO = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_every_service_of_the_loop_is_there() -> None:
    assert {"label-studio", "redis", "backend", "worker", "rq-dashboard"} <= set(SERVICES)
    assert SERVICES["label-studio"]["image"] == "heartexlabs/label-studio:1.23.2"
    assert SERVICES["postgres"]["profiles"] == ["postgres"]
    assert "local-llm" in SERVICES["ollama"]["profiles"]


def test_backend_and_worker_env_are_settings_the_code_reads() -> None:
    fields = {name.upper() for name in Settings.model_fields} | {"LABEL_STUDIO_URL", "LABEL_STUDIO_HOST"}
    for name in ("backend", "worker"):
        env = SERVICES[name]["environment"]
        unknown = set(env) - fields
        assert not unknown, f"{name} sets variables no code reads: {unknown}"
        assert env["REDIS_URL"].startswith("redis://redis:")
    # The backend and the worker share the state volume (published model versions, project state).
    assert SERVICES["backend"]["volumes"] == SERVICES["worker"]["volumes"]
    assert SERVICES["worker"]["command"] == ["llmaaa", "worker"]
    assert "backend.wsgi:app" in SERVICES["backend"]["command"]
    assert "backend.wsgi:app" in (REPO / "Dockerfile").read_text()


def test_label_studio_env_matches_what_the_demo_uses() -> None:
    compose_env = SERVICES["label-studio"]["environment"]
    demo_env = label_studio_env(LabelStudioConfig(data_dir=Path("/tmp/x")))
    for key in ("LABEL_STUDIO_ML_BLOCK_LOCAL_IP", "LABEL_STUDIO_SSRF_PROTECTION_ENABLED",
                "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN", "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK"):
        assert str(compose_env[key]).lower() == demo_env[key].lower(), key
    token = compose_env["LABEL_STUDIO_USER_TOKEN"]
    assert len(token.split(":-")[-1].rstrip("}")) == 40  # Label Studio's legacy token length
    assert "LABEL_STUDIO_TASK_LOCK_TTL" in compose_env
