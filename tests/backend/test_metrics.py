"""backend.metrics: the prometheus_client-backed registry keeps its small API and renders valid text."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from backend.metrics import REGISTRY, Registry


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, parsed by prometheus_client's own parser (so the format is valid)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_render_counters_gauges_and_escaping() -> None:
    reg = Registry()
    reg.describe("x_total", "counter", "things")
    reg.inc("x_total", endpoint="predict", status="200")
    reg.inc("x_total", 2, endpoint="predict", status="200")
    reg.set("g", 1.5, model='we"ird\\name')
    text = reg.render()
    assert "# TYPE x_total counter" in text and "# HELP x_total things" in text
    samples = _samples(text)
    assert samples[("x_total", (("endpoint", "predict"), ("status", "200")))] == 3
    assert samples[("g", (("model", 'we"ird\\name'),))] == 1.5
    assert reg.get("x_total", endpoint="predict", status="200") == 3
    assert reg.get("x_total", endpoint="other", status="200") == 0.0
    assert "_created" not in text


def test_predict_seconds_is_a_histogram_with_count() -> None:
    """The old registry had only `_sum`: a rate of requests or a mean latency could not be computed."""
    reg = Registry()
    reg.describe("llmaaa_predict_seconds", "histogram", "time", (0.1, 1.0), labels=())
    reg.alias("llmaaa_predict_seconds_sum", "llmaaa_predict_seconds")
    reg.inc("llmaaa_predict_seconds_sum", 0.05)  # the call backend/app.py makes
    reg.observe("llmaaa_predict_seconds", 0.5)
    samples = _samples(reg.render())
    assert samples[("llmaaa_predict_seconds_count", ())] == 2
    assert samples[("llmaaa_predict_seconds_sum", ())] == pytest.approx(0.55)
    assert samples[("llmaaa_predict_seconds_bucket", (("le", "0.1"),))] == 1
    assert samples[("llmaaa_predict_seconds_bucket", (("le", "+Inf"),))] == 2
    assert reg.get("llmaaa_predict_seconds_count") == 2


def test_the_process_registry_shows_llm_errors_retries_and_predict_histogram() -> None:
    text = REGISTRY.render()
    for name, kind in [("llmaaa_llm_errors_total", "counter"), ("llmaaa_llm_retries_total", "counter"),
                       ("llmaaa_predict_seconds", "histogram")]:
        assert f"# TYPE {name} {kind}" in text
    assert "llmaaa_predict_seconds_count " in text
    before = REGISTRY.get("llmaaa_predict_seconds_count")
    REGISTRY.inc("llmaaa_predict_seconds_sum", 0.2)  # what backend/app.py does per /predict
    assert REGISTRY.get("llmaaa_predict_seconds_count") == before + 1


def test_collectors_run_before_each_scrape() -> None:
    reg = Registry()
    calls = []
    reg.add_collector(lambda r: (calls.append(1), r.set("seen", len(calls))))
    assert _samples(reg.render())[("seen", ())] == 1
    assert _samples(reg.render())[("seen", ())] == 2


def test_collector_gauges_leave_no_stale_label_series() -> None:
    """A job moving from stage=train to stage=done must not keep reporting the train series."""
    reg = Registry()
    stage = {"now": "train"}
    reg.add_collector(lambda r: r.set("progress", 0.5, project="1", stage=stage["now"]))
    assert ("progress", (("project", "1"), ("stage", "train"))) in _samples(reg.render())
    stage["now"] = "done"
    samples = _samples(reg.render())
    assert ("progress", (("project", "1"), ("stage", "done"))) in samples
    assert ("progress", (("project", "1"), ("stage", "train"))) not in samples


def test_clear_drops_series_and_a_broken_collector_does_not_break_the_scrape() -> None:
    reg = Registry()
    reg.set("g", 1, project="1")
    reg.set("g", 2, project="2")
    reg.clear("g")
    reg.set("g", 3, project="3")
    assert {k[1] for k in _samples(reg.render()) if k[0] == "g"} == {(("project", "3"),)}

    def broken(r: Registry) -> None:
        raise RuntimeError("state file unreadable")

    reg.add_collector(broken)
    assert "g{" in reg.render()


def test_label_names_are_fixed_per_metric_and_kinds_checked() -> None:
    reg = Registry()
    reg.inc("y_total", outcome="a")
    with pytest.raises(ValueError, match="labels"):
        reg.inc("y_total", reason="b")
    with pytest.raises(ValueError, match="kind"):
        reg.describe("z", "summary-ish", "bad kind")
