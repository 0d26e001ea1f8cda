from backend.metrics import Registry


def test_render_counters_gauges_and_escaping() -> None:
    reg = Registry()
    reg.describe("x_total", "counter", "things")
    reg.inc("x_total", endpoint="predict", status="200")
    reg.inc("x_total", 2, endpoint="predict", status="200")
    reg.set("g", 1.5, model='we"ird\\name')
    text = reg.render()
    assert '# TYPE x_total counter' in text
    assert 'x_total{endpoint="predict",status="200"} 3' in text
    assert 'g{model="we\\"ird\\\\name"} 1.5' in text
    assert reg.get("x_total", endpoint="predict", status="200") == 3


def test_collectors_run_before_each_scrape() -> None:
    reg = Registry()
    calls = []
    reg.add_collector(lambda r: (calls.append(1), r.set("seen", len(calls))))
    assert "seen 1" in reg.render()
    assert "seen 2" in reg.render()
