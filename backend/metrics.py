"""The process's Prometheus metrics (`prometheus_client`), exposed on `GET /metrics` in the text format.

`REGISTRY` is a thin facade over a `prometheus_client.CollectorRegistry`, so callers name a metric and
its labels in one call (`REGISTRY.inc("llmaaa_predict_tasks_total", outcome="annotated")`) and need not
hold metric objects. A metric is created on first use with the label names of that call; a later call
with other label names is a programming error and raises `ValueError`.

Gauges that collectors (`add_collector`) set are owned by the collectors: they are cleared before each
scrape and set afresh, so a label series that a collector no longer reports (a retrain job's old
`stage`) disappears instead of staying at its last value. A collector that raises is logged and skipped;
the scrape still answers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)

# No `<name>_created` series next to every counter and histogram: they double the output for nothing here.
prometheus_client.disable_created_metrics()

KINDS = ("counter", "gauge", "histogram")
# Seconds: /predict spans a cached single task (ms) to a large batch near the deadline (80 s by default).
PREDICT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 120.0)
NO_STATUS = "none"  # `status` label of LLM errors that carry no HTTP status (timeout, connection, reply faults)


class Registry:
    """`inc` / `set` / `observe` / `get` / `clear` by name and labels; `render` in the Prometheus text format."""

    def __init__(self) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self._lock = threading.RLock()
        self._render_lock = threading.Lock()
        self._meta: dict[str, tuple[str, str, tuple[float, ...] | None]] = {}
        self._metrics: dict[str, tuple[Any, tuple[str, ...]]] = {}
        self._aliases: dict[str, str] = {}
        self._collectors: list[Callable[[Registry], None]] = []
        self._keyed: dict[str, Callable[[Registry], None]] = {}
        self._collector_gauges: set[str] = set()
        self._in_collector = threading.local()

    def describe(self, name: str, kind: str, help_text: str, buckets: Sequence[float] | None = None,
                 labels: Sequence[str] | None = None) -> None:
        """Declare a metric's kind (counter, gauge, histogram) and help text before its first use.

        With `labels`, the metric is created now, so `/metrics` lists it (HELP/TYPE) before any event.
        """
        if kind not in KINDS:
            raise ValueError(f"metric {name}: kind must be one of {KINDS}, not {kind!r}")
        with self._lock:
            self._meta[name] = (kind, help_text, tuple(buckets) if buckets else None)
        if labels is not None:
            self._create(name, kind, tuple(sorted(labels)))

    def alias(self, old: str, histogram: str) -> None:
        """`inc(old, x)` observes `x` in `histogram`: keeps callers of a former `<name>_sum` counter working."""
        self._aliases[old] = histogram

    def _create(self, name: str, default_kind: str, names: tuple[str, ...]) -> tuple[Any, tuple[str, ...]]:
        with self._lock:
            found = self._metrics.get(name)
            if found is None:
                kind, help_text, buckets = self._meta.get(name, (default_kind, name, None))
                if kind == "counter":
                    metric: Any = Counter(name, help_text, names, registry=self._registry)
                elif kind == "gauge":
                    metric = Gauge(name, help_text, names, registry=self._registry)
                else:
                    metric = Histogram(name, help_text, names, registry=self._registry,
                                       buckets=buckets or Histogram.DEFAULT_BUCKETS)
                found = self._metrics[name] = (metric, names)
            return found

    def _metric(self, name: str, default_kind: str, labels: dict[str, str]) -> Any:
        names = tuple(sorted(labels))
        metric, known = self._create(name, default_kind, names)
        if names != known:
            raise ValueError(f"metric {name} has labels {list(known)}, not {list(names)}")
        return metric.labels(**{k: str(v) for k, v in labels.items()}) if names else metric

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        if name in self._aliases:
            self.observe(self._aliases[name], amount, **labels)
            return
        default = "counter" if name.endswith("_total") else "gauge"
        self._metric(name, default, labels).inc(amount)

    def set(self, name: str, value: float, **labels: str) -> None:
        self._metric(name, "gauge", labels).set(float(value))
        if getattr(self._in_collector, "active", False):
            self._collector_gauges.add(name)

    def observe(self, name: str, value: float, **labels: str) -> None:
        self._metric(name, "histogram", labels).observe(float(value))

    def clear(self, name: str) -> None:
        """Drop every label series of `name` (a gauge about to be set afresh); no-op if never used."""
        with self._lock:
            found = self._metrics.get(name)
        if found is not None and found[1]:
            found[0].clear()

    def get(self, name: str, **labels: str) -> float:
        """A sample's current value (0.0 if absent). Histograms: ask for `<name>_count` / `<name>_sum`."""
        value = self._registry.get_sample_value(name, {k: str(v) for k, v in labels.items()})
        if value is None and not name.endswith("_total"):
            value = self._registry.get_sample_value(f"{name}_total", {k: str(v) for k, v in labels.items()})
        return float(value or 0.0)

    def add_collector(self, fn: Callable[[Registry], None], key: str | None = None) -> None:
        """`fn(registry)` refreshes gauges right before each scrape (e.g. from the cost ledger).

        With `key`, `fn` replaces the collector added earlier under the same key.
        """
        with self._lock:
            if key is not None:
                self._keyed[key] = fn
            else:
                self._collectors.append(fn)

    def render(self) -> str:
        with self._render_lock:
            for name in list(self._collector_gauges):
                self.clear(name)
            self._in_collector.active = True
            try:
                for fn in [*self._collectors, *self._keyed.values()]:
                    try:
                        fn(self)
                    except Exception:  # noqa: BLE001 - one broken collector must not break the scrape
                        log.exception("metrics collector %r failed", fn)
            finally:
                self._in_collector.active = False
            return generate_latest(self._registry).decode("utf-8")


REGISTRY = Registry()
for _name, _kind, _help in [
    ("llmaaa_http_requests_total", "counter", "HTTP requests by endpoint and status"),
    ("llmaaa_predict_tasks_total", "counter", "Tasks asked for in /predict, by outcome"),
    ("llmaaa_not_annotated_total", "counter", "Tasks left without a prediction, by reason"),
    ("llmaaa_webhook_events_total", "counter", "Webhook events received, by action"),
    ("llmaaa_llm_calls_total", "gauge", "LLM calls in the cost ledger, by model and cached"),
    ("llmaaa_llm_tokens_total", "gauge", "LLM tokens in the cost ledger, by model and kind"),
    ("llmaaa_llm_cost_usd_total", "gauge", "LLM cost in USD in the cost ledger, by model"),
    ("llmaaa_retrain_progress", "gauge", "Progress of the project's latest retrain job, by stage"),
    ("llmaaa_student_f1", "gauge", "Student F1 on held-out verified tasks (last retrain)"),
    ("llmaaa_llm_f1", "gauge", "LLM F1 on the same held-out verified tasks (last retrain)"),
    ("llmaaa_acquisition_round", "gauge", "Current acquisition round (0: none yet)"),
    ("llmaaa_serving_student", "gauge", "1 when /predict serves the student's spans, 0 for the LLM's"),
]:
    REGISTRY.describe(_name, _kind, _help)
REGISTRY.describe("llmaaa_llm_errors_total", "counter",
                  "Failed LLM attempts and unusable replies, by kind (rate_limited, server_error, http_error, "
                  "timeout, connection, malformed, cut_off, content_filter) and HTTP status ('none' without one); "
                  "errors minus retries of one kind and status = calls given up", labels=("kind", "status"))
REGISTRY.describe("llmaaa_llm_retries_total", "counter",
                  "LLM requests repeated after a failed attempt, by the attempt's error kind and HTTP status",
                  labels=("kind", "status"))
REGISTRY.describe("llmaaa_predict_seconds", "histogram", "Time spent answering /predict", PREDICT_BUCKETS,
                  labels=())
# backend/app.py adds each request's time with `inc("llmaaa_predict_seconds_sum", dt)`: that is an observation.
REGISTRY.alias("llmaaa_predict_seconds_sum", "llmaaa_predict_seconds")
