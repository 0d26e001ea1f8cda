"""A small in-process Prometheus registry (counters and gauges), exposed on `GET /metrics`."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable

LabelKey = tuple[tuple[str, str], ...]


def _fmt_labels(labels: LabelKey) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for k, v in labels)
    return "{" + inner + "}"


class Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[LabelKey, float]] = defaultdict(dict)
        self._meta: dict[str, tuple[str, str]] = {}
        self._collectors: list[Callable[[Registry], None]] = []

    def describe(self, name: str, kind: str, help_text: str) -> None:
        self._meta[name] = (kind, help_text)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[name][key] = self._values[name].get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[name][key] = float(value)

    def get(self, name: str, **labels: str) -> float:
        return self._values.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def add_collector(self, fn: Callable[[Registry], None]) -> None:
        """`fn` refreshes gauges right before each scrape (e.g. from the cost ledger)."""
        self._collectors.append(fn)

    def render(self) -> str:
        for fn in self._collectors:
            fn(self)
        lines: list[str] = []
        with self._lock:
            for name in sorted(self._values):
                kind, help_text = self._meta.get(name, ("untyped", name))
                lines.append(f"# HELP {name} {help_text}")
                lines.append(f"# TYPE {name} {kind}")
                for key, value in sorted(self._values[name].items()):
                    lines.append(f"{name}{_fmt_labels(key)} {value:g}")
        return "\n".join(lines) + "\n"


REGISTRY = Registry()
for _name, _kind, _help in [
    ("llmaaa_http_requests_total", "counter", "HTTP requests by endpoint and status"),
    ("llmaaa_predict_tasks_total", "counter", "Tasks asked for in /predict, by outcome"),
    ("llmaaa_not_annotated_total", "counter", "Tasks left without a prediction, by reason"),
    ("llmaaa_webhook_events_total", "counter", "Webhook events received, by action"),
    ("llmaaa_llm_calls_total", "gauge", "LLM calls in the cost ledger, by model and cached"),
    ("llmaaa_llm_tokens_total", "gauge", "LLM tokens in the cost ledger, by model and kind"),
    ("llmaaa_llm_cost_usd_total", "gauge", "LLM cost in USD in the cost ledger, by model"),
    ("llmaaa_predict_seconds_sum", "counter", "Total time spent in /predict"),
    ("llmaaa_retrain_progress", "gauge", "Progress of the project's latest retrain job, by stage"),
    ("llmaaa_student_f1", "gauge", "Student F1 on held-out verified tasks (last retrain)"),
    ("llmaaa_llm_f1", "gauge", "LLM F1 on the same held-out verified tasks (last retrain)"),
    ("llmaaa_acquisition_round", "gauge", "Current acquisition round (0: none yet)"),
    ("llmaaa_serving_student", "gauge", "1 when /predict serves the student's spans, 0 for the LLM's"),
]:
    REGISTRY.describe(_name, _kind, _help)
