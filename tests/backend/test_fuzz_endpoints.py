"""Property-based fuzzing of /predict, /setup and /webhook (issue 12).

Bodies are built from the shapes Label Studio sends, with any field at any level replaced by another JSON
value, dropped, made huge or filled with odd Unicode; some bodies are not JSON at all. The invariant for
every request: no 5xx, a JSON object body (with an `error` message on a 4xx), and /health still answers
200. The LLM is an in-process fake and Label Studio is not configured, so nothing leaves the process and
no project may leave anything on disk. Deterministic (`derandomize`), about 1,100 requests in all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_fakes import CONFIG, MENTION, fake_app
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.protocol import KNOWN_EVENTS

FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

ODD = ["\ud800", "\udfff", "\u202e", "\u0663\u0664", "\x00", "\ufeff", "a\u0301", "\U0001f600", "\u2028",
       "<script>", "${text}", "'; DROP TABLE tasks; --", "\\", '"']
HUGE = ["x" * 100_000, f"{MENTION} " * 20_000]
BAD_NUMBERS = [True, False, -5, 0, 2**31, 2**63, 10**300, -(10**300), 3.0, 60.1, float("inf"), float("nan"), 1e308]
CONFIGS = [CONFIG, "<View/>", "not xml", "", "<View><Labels name='l' toName='t'/><Text name='t' value='$text'/></View>",
           "<View><Labels name='l' toName='t'><Label value='A'/></Labels><Text name='t' value='text'/></View>",
           "<View><Labels name='l' toName='t'><Label value='A'/><Label value='A'/></Labels>"
           "<Text name='t' value='$text'/></View>", CONFIG * 2]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.sampled_from(BAD_NUMBERS),
                    st.floats(), st.text(max_size=12), st.sampled_from(ODD))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
# The wrong value put in place of a field: one level deep, which is cheaper to generate than json_values.
junk = st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(st.text(max_size=4), scalars, max_size=2))
texts = st.one_of(st.text(max_size=60), st.sampled_from([MENTION, f"{MENTION} induced hypotension", " "]),
                  st.sampled_from(ODD).map(lambda c: f"{MENTION}{c}{MENTION}"), st.sampled_from(HUGE))
configs = st.one_of(st.sampled_from(CONFIGS), st.text(max_size=30))
project_refs = st.one_of(st.integers(1, 6), st.sampled_from(["3.1700000000", "5", "\u0663", "3.", ".3", "03"]),
                         st.integers(1, 2**31 - 1), st.sampled_from(BAD_NUMBERS), junk)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the valid shape, else another JSON value: wrong types at every level."""
    return st.one_of(valid, valid, valid, junk)


def obj(required: dict[str, st.SearchStrategy[Any]] | None = None,
        optional: dict[str, st.SearchStrategy[Any]] | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """An object whose optional keys are each sometimes missing, plus sometimes an unexpected key."""
    base = st.fixed_dictionaries(required or {}, optional=optional or {})
    return st.one_of(base, st.tuples(base, st.text(max_size=6), junk).map(lambda t: {**t[0], t[1]: t[2]}))


tasks = obj(optional={"id": maybe(st.integers(0, 10**6)), "project": project_refs,
                      "data": maybe(obj(optional={"text": maybe(texts)}))})
regions = obj(optional={
    "from_name": st.sampled_from(["label", "other"]), "to_name": st.just("text"), "type": st.just("labels"),
    "value": maybe(obj(optional={"start": maybe(st.integers(-3, 30)), "end": maybe(st.integers(-3, 30)),
                                 "labels": maybe(st.lists(st.sampled_from(["Chemical", "Nope"]), max_size=2)),
                                 "text": maybe(texts)}))})
predict_bodies = obj(optional={
    "tasks": maybe(st.one_of(st.lists(maybe(tasks), max_size=5), st.just([{}] * 1001))),
    "project": project_refs, "label_config": maybe(configs),
    "params": maybe(obj(optional={"context": junk, "login": junk}))})
setup_bodies = obj(optional={
    "project": project_refs, "schema": maybe(configs), "extra_params": junk,
    "hostname": maybe(st.sampled_from(["http://127.0.0.1:9", "https://127.0.0.1:9/", "http://[::1", "ftp://x",
                                       "", "javascript:alert(1)"])),
    "access_token": maybe(st.text(max_size=20))})
webhook_bodies = obj(optional={
    "action": st.one_of(st.sampled_from(sorted(KNOWN_EVENTS)), junk),
    "project": maybe(obj(optional={"id": project_refs, "label_config": maybe(configs)})),
    "task": maybe(tasks),
    "annotation": maybe(obj(optional={"id": maybe(st.integers(0, 10**6)), "was_cancelled": st.booleans(),
                                      "result": maybe(st.lists(maybe(regions), max_size=3))})),
    "annotations": maybe(st.lists(maybe(obj(optional={"id": maybe(st.integers(0, 10**6))})), max_size=3))})
# Not JSON objects at all: raw bytes, broken JSON, deep nesting.
raw_bodies = st.one_of(st.binary(max_size=40), st.sampled_from([b"", b"{", b"null", b"[]", b'{"a":}', b"\xff\xfe",
                                                                b"[" * 100_000 + b"]" * 100_000,
                                                                b'{"a":' * 50_000 + b"1" + b"}" * 50_000]))


def bodies(json_bodies: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[str, Any]]:
    return st.one_of(json_bodies.map(lambda b: ("json", b)), json_bodies.map(lambda b: ("json", b)),
                     json_values.map(lambda b: ("json", b)), raw_bodies.map(lambda b: ("raw", b)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def client(data_dir: Path) -> Iterator[FlaskClient]:
    # A small registry, so the run also goes through evictions; a short deadline keeps /predict quick.
    yield fake_app(data_dir, max_projects=8, predict_deadline_s=4.0).test_client()


def check(client: FlaskClient, path: str, kind: str, body: Any) -> dict[str, Any]:
    if kind == "json":
        resp = client.post(path, json=body)
    else:
        resp = client.post(path, data=body, content_type="application/json")
    text = resp.get_data(as_text=True)
    assert resp.status_code < 500, f"{path} answered {resp.status_code}: {text[:500]}"
    assert resp.is_json, f"{path} answered {resp.status_code} without JSON: {text[:200]}"
    answer = resp.get_json()
    assert isinstance(answer, dict)
    if resp.status_code >= 400:
        assert isinstance(answer.get("error"), str) and answer["error"], answer
    assert client.get("/health").status_code == 200
    return {"status": resp.status_code, **answer}


def run(client: FlaskClient, path: str, strategy: st.SearchStrategy[tuple[str, Any]], examples: int,
        on_ok: Callable[[Any, dict[str, Any]], None] | None = None) -> int:
    sent = 0

    @settings(FUZZ, max_examples=examples)
    @given(request=strategy)
    def fuzz(request: tuple[str, Any]) -> None:
        nonlocal sent
        sent += 1
        answer = check(client, path, *request)
        if on_ok is not None and answer["status"] == 200:
            on_ok(request[1], answer)

    fuzz()
    return sent


def one_entry_per_task(body: Any, answer: dict[str, Any]) -> None:
    assert len(answer["results"]) == len(body["tasks"])


def test_predict_never_fails_with_5xx(client: FlaskClient, data_dir: Path) -> None:
    assert run(client, "/predict", bodies(predict_bodies), 450, one_entry_per_task) >= 450
    assert not (data_dir / "projects").exists(), "Label Studio confirmed no project: nothing on disk"


def test_setup_never_fails_with_5xx(client: FlaskClient, data_dir: Path) -> None:
    assert run(client, "/setup", bodies(setup_bodies), 300) >= 300
    assert not (data_dir / "projects").exists()


def test_webhook_never_fails_with_5xx(client: FlaskClient, data_dir: Path) -> None:
    assert run(client, "/webhook", bodies(webhook_bodies), 350) >= 350
    assert not (data_dir / "projects").exists()
