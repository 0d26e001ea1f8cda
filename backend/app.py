"""Label Studio's ML-backend protocol in plain Flask 3 (see backend/base.py for why not label-studio-ml)."""

from __future__ import annotations

import base64
import hmac
import logging
import time
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from backend.events import TRAIN_EVENTS
from backend.metrics import REGISTRY
from backend.model import NERBackendModel
from backend.protocol import BadRequest, predict_request, setup_request, webhook_request
from backend.registry import ModelRegistry
from backend.settings import Settings, get_settings

log = logging.getLogger(__name__)

def _json_body() -> dict[str, Any]:
    try:
        body = request.get_json(silent=True)
    except RecursionError as exc:  # not a ValueError, so `silent` lets it through
        raise BadRequest("the body is nested too deeply") from exc
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


def _model(models: ModelRegistry, project_id: int, label_config: str | None, ls_url: str | None = None,
           ls_token: str | None = None) -> NERBackendModel:
    try:
        return models.get(project_id, label_config, ls_url, ls_token)
    except KeyError as exc:
        raise BadRequest(str(exc.args[0]) if exc.args else str(exc)) from exc
    except ValueError as exc:  # e.g. a config without <Labels>/<Text>
        raise BadRequest(f"unsupported labeling config: {exc}") from exc


def _register_error_handlers(app: Flask) -> None:
    """Every error is JSON with a message: clients (and the fuzz suite) never parse an HTML page."""

    @app.errorhandler(BadRequest)
    def _bad_request(exc: BadRequest) -> tuple[Response, int]:
        log.warning("%d on %s: %s", exc.status, request.path, exc)
        return jsonify({"error": str(exc)}), exc.status

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        return jsonify({"error": exc.description or exc.name}), exc.code or 500

    @app.errorhandler(Exception)
    def _internal(exc: Exception) -> tuple[Response, int]:
        log.exception("500 on %s", request.path)
        return jsonify({"error": f"internal error ({type(exc).__name__}); the details are in the server log"}), 500


def create_app(settings: Settings | None = None, registry: ModelRegistry | None = None) -> Flask:
    settings = settings or get_settings()
    models = registry or ModelRegistry(settings)
    app = Flask("llmaaa")
    app.config["MODELS"] = models
    # Keyed: a second app in the process (tests) replaces the first one's collectors instead of piling up.
    REGISTRY.add_collector(lambda registry: collect_projects(registry, models), key="projects")
    REGISTRY.add_collector(lambda registry: collect_costs(registry, models), key="costs")
    _register_guards(app, settings)
    _register_error_handlers(app)
    _register_protocol(app, settings, models)
    _register_operations(app, models)
    models.start_retrier()
    return app


def collect_projects(registry: Any, models: ModelRegistry) -> None:
    """Job state (stage, epoch and step while training) and the last comparison of every project served."""
    for model in models.all():
        state, pid = model.state.read(), str(model.project_id)
        job = state.get("job") or {}
        stage = str(job.get("stage", "none"))
        registry.set("llmaaa_retrain_progress", float(job.get("progress") or 0.0), project=pid, stage=stage)
        for key in ("epoch", "max_epochs", "step", "total_steps"):
            if job.get(key) is not None:
                registry.set(f"llmaaa_retrain_{key}", float(job[key]), project=pid)
        for key in ("student_f1", "llm_f1"):
            if state.get(key) is not None:
                registry.set(f"llmaaa_{key}", float(state[key]), project=pid)
        registry.set("llmaaa_acquisition_round", float(state.get("acq_round") or 0), project=pid)
        registry.set("llmaaa_serving_student", 1.0 if model.serving_student() else 0.0, project=pid)
        registry.set("llmaaa_llm_failed_tasks", float(len(model.llm_labels.failures())), project=pid)


def collect_costs(registry: Any, models: ModelRegistry) -> None:
    for model, row in models.runtime.ledger().summary().items():
        registry.set("llmaaa_llm_calls_total", row["calls"] - row["cached_calls"], model=model, cached="false")
        registry.set("llmaaa_llm_calls_total", row["cached_calls"], model=model, cached="true")
        registry.set("llmaaa_llm_tokens_total", row["prompt_tokens"], model=model, kind="prompt")
        registry.set("llmaaa_llm_tokens_total", row["completion_tokens"], model=model, kind="completion")
        registry.set("llmaaa_llm_cost_usd_total", row["usd"], model=model)


def _register_guards(app: Flask, settings: Settings) -> None:
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


def _register_protocol(app: Flask, settings: Settings, models: ModelRegistry) -> None:
    """/health, /setup, /predict and /webhook: what Label Studio calls."""
    scheduler = None
    if settings.redis_url:
        from backend.jobs import RetrainScheduler

        scheduler = RetrainScheduler(settings.redis_url, settings.min_new_annotations)

    @app.get("/health")
    @app.get("/")
    def health() -> Response:
        return jsonify({"status": "UP", "model_class": "NERBackendModel", "v2": True})

    @app.post("/setup")
    def setup() -> Response:
        req = setup_request(_json_body())
        model = _model(models, req.project_id, req.schema, req.hostname, req.access_token)
        model.reconfirm()  # Label Studio was unreachable when the model was built: try again now
        return jsonify({"model_version": model.model_version})

    @app.post("/predict")
    def predict() -> Response:
        req = predict_request(_json_body(), settings.max_tasks_per_request)
        model = _model(models, req.project_id, req.label_config)
        started = time.perf_counter()
        results = model.predict(req.tasks, context=req.context)
        REGISTRY.observe("llmaaa_predict_seconds", time.perf_counter() - started)
        return jsonify({"results": results, "model_version": model.model_version})

    @app.post("/webhook")
    def webhook() -> tuple[Response, int] | Response:
        req = webhook_request(_json_body())
        model = models.known(req.project_id)
        if model is None and req.label_config is not None and req.action in TRAIN_EVENTS:
            model = _model(models, req.project_id, req.label_config)
        REGISTRY.inc("llmaaa_webhook_events_total", action=req.action)
        result = model.fit(req.action, req.body) if model is not None and req.action in TRAIN_EVENTS else {}
        if scheduler is None or req.action not in TRAIN_EVENTS:
            return jsonify({"status": "ok", "action": req.action, **result, "retrain": {"enabled": False}})
        from backend.jobs import QueueUnavailable

        try:
            queued = scheduler.on_event(req.project_id, req.action)
        except QueueUnavailable as exc:
            log.error("webhook %s for project %s: %s", req.action, req.project_id, exc)
            return jsonify({"error": str(exc), "action": req.action}), 503
        retrain = {"enabled": True, "queued": queued.queued, "job_id": queued.job_id, "reason": queued.reason}
        # Label Studio records `job` from a START_TRAINING answer as the backend's train job (its dialog
        # still prints its own empty body: docs/predictions.md rule 6).
        return jsonify({"status": "ok", "action": req.action, **result, "retrain": retrain, "job": queued.job_id})


def _register_operations(app: Flask, models: ModelRegistry) -> None:
    @app.get("/versions")
    def versions() -> Response:
        found: list[str] = []
        for model in models.all():
            found.extend(v for v in model.versions() if v not in found)
        return jsonify({"versions": found})

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(REGISTRY.render(), mimetype="text/plain; version=0.0.4")
