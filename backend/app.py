"""Label Studio's ML-backend protocol in plain Flask 3 (see backend/base.py for why not label-studio-ml)."""

from __future__ import annotations

import base64
import hmac
import logging
import time
from typing import Any

from flask import Flask, Response, g, jsonify, request

from backend.base import TRAIN_EVENTS
from backend.labelstudio import project_id_of
from backend.metrics import REGISTRY
from backend.model import ModelRegistry
from backend.settings import Settings, get_settings

log = logging.getLogger(__name__)

KNOWN_EVENTS = frozenset(TRAIN_EVENTS) | {
    "ANNOTATIONS_CREATED", "TASKS_CREATED", "TASKS_DELETED", "PROJECT_CREATED", "PROJECT_UPDATED",
    "PROJECT_DELETED", "LABEL_LINK_CREATED", "LABEL_LINK_UPDATED", "LABEL_LINK_DELETED",
}


class BadRequest(ValueError):
    """A malformed request body; answered with 400 and a message, nothing else happens."""


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _basic_auth_ok(settings: Settings) -> bool:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    expected = settings.basic_auth_pass.get_secret_value() if settings.basic_auth_pass else ""
    return _same(user, settings.basic_auth_user or "") and _same(password, expected)


def _authorized(settings: Settings, endpoint: str) -> bool:
    """Basic auth guards every endpoint but /health when configured. /webhook also accepts the shared
    secret header, because Label Studio webhooks can send custom headers but not basic auth, while
    START_TRAINING arrives over the ML connection, with basic auth."""
    basic = settings.basic_auth_user is not None
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    if endpoint == "webhook":
        if secret and _same(request.headers.get(settings.webhook_secret_header, ""), secret):
            return True
        if basic and _basic_auth_ok(settings):
            return True
        return not (basic or secret)
    return not basic or _basic_auth_ok(settings)


def create_app(settings: Settings | None = None, registry: ModelRegistry | None = None) -> Flask:
    settings = settings or get_settings()
    models = registry or ModelRegistry(settings)
    scheduler = None
    if settings.redis_url:
        from backend.jobs import RetrainScheduler

        scheduler = RetrainScheduler(settings.redis_url, settings.min_new_annotations)
    app = Flask("llmaaa")
    app.config["MODELS"] = models

    def collect_projects(registry: Any) -> None:
        """Job state and the last training metrics of every project this process serves."""
        for model in models.all():
            state, pid = model.state.read(), str(model.project_id)
            job = state.get("job") or {}
            registry.set("llmaaa_retrain_progress", float(job.get("progress") or 0.0), project=pid,
                         stage=str(job.get("stage", "none")))
            for key in ("student_f1", "llm_f1"):
                if state.get(key) is not None:
                    registry.set(f"llmaaa_{key}", float(state[key]), project=pid)
            registry.set("llmaaa_acquisition_round", float(state.get("acq_round") or 0), project=pid)
            registry.set("llmaaa_serving_student", 1.0 if model.serving_student() else 0.0, project=pid)

    REGISTRY.add_collector(collect_projects)

    @app.before_request
    def _guard() -> Response | tuple[Response, int] | None:
        g.started = time.perf_counter()
        endpoint = request.endpoint or ""
        if endpoint in ("health", "static") or _authorized(settings, endpoint):
            return None
        resp = jsonify({"error": "unauthorized"})
        if settings.basic_auth_user:
            resp.headers["WWW-Authenticate"] = 'Basic realm="llmaaa"'
        return resp, 401

    @app.after_request
    def _count(resp: Response) -> Response:
        REGISTRY.inc("llmaaa_http_requests_total", endpoint=request.endpoint or "unknown",
                     status=str(resp.status_code))
        return resp

    @app.errorhandler(BadRequest)
    def _bad_request(exc: BadRequest) -> tuple[Response, int]:
        log.warning("400 on %s: %s", request.path, exc)
        return jsonify({"error": str(exc)}), 400

    @app.get("/health")
    @app.get("/")
    def health() -> Response:
        return jsonify({"status": "UP", "model_class": "NERBackendModel", "v2": True})

    @app.post("/setup")
    def setup() -> Response:
        body = _json_body()
        try:
            project_id = project_id_of(body.get("project"))
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
        schema = body.get("schema")
        if not isinstance(schema, str) or not schema.strip():
            raise BadRequest("`schema` (the project's labeling config) is required")
        try:
            model = models.get(project_id, schema, body.get("hostname"), body.get("access_token"))
        except ValueError as exc:  # e.g. a config without <Labels>/<Text>
            raise BadRequest(f"unsupported labeling config: {exc}") from exc
        return jsonify({"model_version": model.model_version})

    @app.post("/predict")
    def predict() -> Response:
        body = _json_body()
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise BadRequest("`tasks` must be a list of task objects")
        try:
            project_id = project_id_of(body.get("project") or (tasks[0].get("project") if tasks else None))
            model = models.get(project_id, body.get("label_config"))
        except (ValueError, KeyError) as exc:
            raise BadRequest(str(exc)) from exc
        context = (body.get("params") or {}).get("context")
        started = time.perf_counter()
        results = model.predict(tasks, context=context)
        REGISTRY.inc("llmaaa_predict_seconds_sum", time.perf_counter() - started)
        return jsonify({"results": results, "model_version": model.model_version})

    @app.post("/webhook")
    def webhook() -> tuple[Response, int] | Response:
        body = _json_body()
        action = body.get("action")
        if not isinstance(action, str) or action not in KNOWN_EVENTS:
            raise BadRequest(f"unknown or missing `action`: {action!r}")
        try:
            project_id = project_id_of(body.get("project"))
        except ValueError as exc:
            raise BadRequest(f"`project` must be the project object: {exc}") from exc
        if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
            if not isinstance(body.get("annotation"), dict) or not isinstance(body.get("task"), dict):
                raise BadRequest(f"{action} needs `annotation` and `task` objects")
        if action == "ANNOTATIONS_DELETED" and not isinstance(body.get("annotations"), list):
            raise BadRequest("ANNOTATIONS_DELETED needs an `annotations` list")
        REGISTRY.inc("llmaaa_webhook_events_total", action=action)
        model = models.known(project_id)
        label_config = (body.get("project") or {}).get("label_config")
        if model is None and isinstance(label_config, str) and action in TRAIN_EVENTS:
            model = models.get(project_id, label_config)
        result = model.fit(action, body) if model is not None and action in TRAIN_EVENTS else {}
        retrain: dict[str, Any] = {"enabled": False}
        if scheduler is not None and action in TRAIN_EVENTS:
            from backend.jobs import QueueUnavailable

            try:
                queued = scheduler.on_event(project_id, action)
            except QueueUnavailable as exc:
                log.error("webhook %s for project %s: %s", action, project_id, exc)
                return jsonify({"error": str(exc), "action": action}), 503
            retrain = {"enabled": True, "queued": queued.queued, "job_id": queued.job_id, "reason": queued.reason}
        return jsonify({"status": "ok", "action": action, **result, "retrain": retrain})

    @app.get("/versions")
    def versions() -> Response:
        found: list[str] = []
        for model in models.all():
            found.extend(v for v in model.versions() if v not in found)
        return jsonify({"versions": found})

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(REGISTRY.render(), mimetype="text/plain; version=0.0.4")

    return app

