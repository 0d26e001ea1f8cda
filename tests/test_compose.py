"""No Docker engine runs here, so the compose file is checked by parsing it against the code it runs."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from urllib.parse import urlparse

import yaml

from backend.settings import Settings
from llmaaa import demo, local_llm
from llmaaa.services import LabelStudioConfig, label_studio_env

REPO = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_every_service_of_the_loop_is_there() -> None:
    assert {"label-studio", "redis", "backend", "worker", "rq-dashboard"} <= set(SERVICES)
    assert SERVICES["label-studio"]["image"] == "heartexlabs/label-studio:1.23.2"
    assert SERVICES["postgres"]["profiles"] == ["postgres"]
    assert SERVICES["local-llm"]["profiles"] == ["local-llm"]
    assert SERVICES["ollama"]["profiles"] == ["ollama"]


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


def dockerfile_stages() -> dict[str, str]:
    """Each `FROM ... AS name` stage of the Dockerfile and its text, in order."""
    text = (REPO / "Dockerfile").read_text()
    heads = list(re.finditer(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", text, flags=re.MULTILINE | re.IGNORECASE))
    return {m.group(1): text[m.start(): heads[i + 1].start() if i + 1 < len(heads) else len(text)]
            for i, m in enumerate(heads)}


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def test_local_llm_profile_serves_llmaaa_local_llm_from_an_image_with_the_extra() -> None:
    svc = SERVICES["local-llm"]
    stages = dockerfile_stages()
    assert svc["build"]["target"] == "local-llm" and "local-llm" in stages
    assert "'.[llm]'" in stages["local-llm"] and "assemble()" in stages["local-llm"]  # the model is in the image
    # The backend image has no compiler and no llama.cpp; a plain `docker build .` gives it (the last stage).
    assert SERVICES["backend"]["build"]["target"] == "backend" == list(stages)[-1]
    assert "[llm]" not in stages["backend"] and "[llm]" not in stages["app"]
    command = svc["command"]
    assert command[:2] == ["llmaaa", "local-llm"]
    parser = argparse.ArgumentParser()
    local_llm.register(parser.add_subparsers())
    served = parser.parse_args(command[1:])  # the options the real `llmaaa local-llm` takes
    assert served.host == "0.0.0.0" and served.concurrency == 1 and served.threads == 1
    assert served.model_name == demo.LOCAL_MODEL_ID
    assert svc["ports"] == [f"{served.port}:{served.port}"]
    assert f"localhost:{served.port}/v1/models" in " ".join(svc["healthcheck"]["test"])


def test_env_local_llm_points_backend_and_worker_at_the_profile_with_the_demo_settings() -> None:
    values = env_file(REPO / ".env.local-llm")
    served_port = int(SERVICES["local-llm"]["command"][SERVICES["local-llm"]["command"].index("--port") + 1])
    url = urlparse(values["OPENAI_BASE_URL"])
    assert (url.hostname, url.port, url.path) == ("local-llm", served_port, "/v1")
    # The same LLM settings as `llmaaa demo --llm local` (tests/llmaaa/test_demo_plan.py checks those).
    parser = argparse.ArgumentParser()
    demo.register(parser.add_subparsers())
    args = parser.parse_args(["demo", "--llm", "local"])
    plan = demo.plan_llm(args)
    expected = {**plan.backend_env, "ACQUISITION_BATCH": demo.backend_env(
        args, plan, LabelStudioConfig(data_dir=Path("/tmp/x")))["ACQUISITION_BATCH"]}
    assert {k: v for k, v in values.items() if k != "OPENAI_BASE_URL"} == \
        {k: v for k, v in expected.items() if k != "OPENAI_BASE_URL"}
    # Compose passes each of them through to the backend and the workers (`${NAME:-default}`).
    for name in ("backend", "worker"):
        env = SERVICES[name]["environment"]
        for key in values:
            assert str(env.get(key, "")).startswith(f"${{{key}:-"), (name, key, env.get(key))


def test_env_example_lists_every_variable_the_compose_file_interpolates_at_its_default() -> None:
    """The compose header says `cp .env.example .env`: that file must exist and give the same defaults."""
    text = (REPO / "docker-compose.yml").read_text()
    defaults = dict(re.findall(r"\$\{([A-Z_]+):-([^}]*)\}", text))
    example = dict(line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert defaults and set(example) == set(defaults)
    assert example == defaults
