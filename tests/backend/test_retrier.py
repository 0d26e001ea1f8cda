"""Failed LLM calls: retried with backoff until annotated, marked meanwhile, never "no entities"."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request

from backend.acquire import acquire_round
from backend.annotator.retry_ladder import LADDER
from backend.composition import Services
from backend.retrier import STATUS_KEY, FailedTaskRetrier, RetryPolicy, mark_status, status_text
from backend.serving import LLMLanes, predict_with_llm
from backend.settings import Settings
from llmaaa.services import serve_in_thread
from tests.backend.annotator.annot_fakes import FakeEmbedder, FakeLLM, completion_body, status
from tests.backend.fake_label_studio import FakeLabelStudio
from tests.backend.loop_fakes import LABEL_CONFIG, FakeServices, KnownAnswersLLM
from training.data import Example
from training.spans import Span

TEXTS = {i: f"Case {i}: cisplatin {i} caused nephrotoxicity {i} ." for i in range(1, 11)}
ANSWERS = {t: [("cisplatin", "Chemical"), ("nephrotoxicity", "Disease")] for t in TEXTS.values()}


@pytest.fixture
def setup(tmp_path: Path) -> tuple[FakeLabelStudio, FakeServices, KnownAnswersLLM]:
    ls = FakeLabelStudio(LABEL_CONFIG)
    for tid, text in TEXTS.items():
        ls.add_task(tid, text)
    llm = KnownAnswersLLM({t: a for t, a in ANSWERS.items() if t != TEXTS[3]}, failing=[TEXTS[3]])
    return ls, FakeServices(tmp_path, llm, knn_k=0), llm


def retrier_for(ls: FakeLabelStudio, services: FakeServices, policy: RetryPolicy) -> FailedTaskRetrier:
    annotator = services.project_annotator(1, services.schema(LABEL_CONFIG))
    return FailedTaskRetrier(annotator, services.llm_labels(1), lambda: ls, lambda: ls.project.model_version, policy)


def test_status_tells_nothing_found_from_failed() -> None:
    assert status_text(True, 0) != status_text(False, reason="timeout", attempts=1, max_attempts=6)
    assert "no entities" in status_text(True, 0) and "2 entities" in status_text(True, 2)
    assert "retrying" in status_text(False, reason="timeout", attempts=1, max_attempts=6)
    assert "given up" in status_text(False, reason="timeout", attempts=6, max_attempts=6)
    assert "not retried" in status_text(False, reason="too_long", attempts=1, max_attempts=6)


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay_s=10, max_delay_s=60)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]
    assert [policy.delay(n, "timeout") for n in (1, 3)] == [10, 40]


def test_a_content_failure_is_due_at_the_base_delay_since_its_next_request_changes() -> None:
    from backend.llm_labels import LLMFailure

    policy = RetryPolicy(max_attempts=6, base_delay_s=10, max_delay_s=600)
    for reason in ("malformed_reply", "cut_off"):
        failure = LLMFailure(task_id=1, text="t", reason=reason, attempts=4, ts=1000.0)
        assert policy.delay(4, reason) == 10 and policy.due(failure, now=1010.0)
        assert not policy.due(failure, now=1009.0)
    rate_limited = LLMFailure(task_id=1, text="t", reason="rate_limited", attempts=4, ts=1000.0)
    assert not policy.due(rate_limited, now=1010.0) and policy.due(rate_limited, now=1080.0)


def test_failed_task_is_marked_then_retried_into_the_current_version(setup) -> None:
    ls, services, llm = setup
    acquire_round(ls, 1, services.settings, "random", batch=10, progress=False, services=services)
    assert ls.shown_prediction(3) is None and "LLM failed: timeout" in ls.task_rows[3]["data"][STATUS_KEY]
    assert "2 entities" in ls.task_rows[1]["data"][STATUS_KEY]
    retrier = retrier_for(ls, services, RetryPolicy(max_attempts=3, base_delay_s=100))
    failure = services.llm_labels(1).failures()[3]
    assert retrier.run_once(now=failure.ts + 1).retried == 0  # not due yet: backoff
    llm.failing.clear()
    llm.answers[TEXTS[3]] = ANSWERS[TEXTS[3]]  # the LLM is back
    report = retrier.run_once(now=failure.ts + 101)
    assert (report.retried, report.annotated) == (1, 1)
    shown = ls.shown_prediction(3)
    assert shown is not None and shown["model_version"] == "acq-r1" and len(shown["result"]) == 2
    assert shown["score"] >= 0.5  # after the round's head
    assert "2 entities" in ls.task_rows[3]["data"][STATUS_KEY]
    assert 3 not in services.llm_labels(1).failures() and 3 in services.llm_labels(1).all()


def test_retries_stop_after_max_attempts_and_skip_annotated_tasks(setup) -> None:
    ls, services, llm = setup
    acquire_round(ls, 1, services.settings, "random", batch=10, progress=False, services=services)
    retrier = retrier_for(ls, services, RetryPolicy(max_attempts=2, base_delay_s=0))
    assert retrier.run_once(now=1e12).still_failing == 1  # second attempt fails too
    assert "given up" in ls.task_rows[3]["data"][STATUS_KEY]
    assert retrier.run_once(now=2e12).retried == 0  # attempts exhausted
    assert services.llm_labels(1).failures()[3].attempts == 2
    # A human labelled it meanwhile: the failure is forgotten, nothing is asked.
    retrier.policy = RetryPolicy(max_attempts=5, base_delay_s=0)
    ls.task_rows[3]["annotations"] = [{"id": 3, "result": []}]
    asked = len(llm.asked)
    assert retrier.run_once(now=3e12).skipped == 1 and len(llm.asked) == asked
    assert 3 not in services.llm_labels(1).failures()


def test_first_batch_marks_failures_at_once_and_serves_them_last(setup) -> None:
    from backend.setup_project import preannotate

    ls, services, _ = setup
    stored, failed, version = preannotate(ls, 1, services.settings, 10, progress=False, services=services)
    assert (stored, failed) == (9, 1)
    # Marked when it failed, not at the first retry; and outside the queue until the pre-labelled are done.
    assert "LLM failed: timeout" in ls.task_rows[3]["data"][STATUS_KEY]
    assert ls.project.sampling == "Uncertainty sampling" and ls.project.model_version == version
    served = []
    while (tid := ls.next_task()) is not None:
        served.append(tid)
        ls.task_rows[tid]["annotations"] = [{"id": tid, "result": []}]
    assert served[-1] == 3 and len(served) == 10


# ------------------------------------------------------------------ the content-retry ladder, end to end

K = 4  # demonstrations of the base request
LOOPING_TEXT = "Cisplatin 7 caused nephrotoxicity ."
DEMOS = [Example(f"d{i}", f"Demo {i}: aspirin caused headache .", [Span(8, 15, "Chemical")]) for i in range(6)]


def demos_in(body: dict[str, Any]) -> int:
    return sum(line.startswith("Input: ") for line in body["messages"][-1]["content"].split("\n")) - 1


def loops_on_the_base_request(body: dict[str, Any]) -> dict[str, Any]:
    """A greedy model that repeats one entity until the loop guard stops it (finish_reason "length") when
    asked the base request (K demos, temperature 0), and answers any other request."""
    if demos_in(body) == K and not body.get("temperature") and "seed" not in body:
        return completion_body('{"entities":[' + '{"span":"Cisplatin","type":"Chemical"},' * 3,
                               finish_reason="length")
    return completion_body(json.dumps({"entities": [{"span": "Cisplatin", "type": "Chemical"}]}))


class EndpointServices(Services):
    """The real composition root, LLM client included, on a fake endpoint; only the embedder is a fake."""

    def embedder(self) -> Any:
        return self._once("embedder", FakeEmbedder)


@pytest.fixture
def looping_llm() -> Iterator[FakeLLM]:
    fake = FakeLLM(default=loops_on_the_base_request)
    app = Flask("looping-llm")

    @app.post("/v1/chat/completions")
    def chat() -> Any:
        return fake.handle(request.get_json(force=True), dict(request.headers))

    with serve_in_thread(app, "/v1") as url:
        fake.url = url
        yield fake


@pytest.fixture
def looping(tmp_path: Path, looping_llm: FakeLLM) -> tuple[FakeLabelStudio, EndpointServices, Any]:
    services = EndpointServices(Settings(llmaaa_data_dir=tmp_path, openai_base_url=looping_llm.url,
                                         llm_model="fake-model", llm_max_retries=0, knn_k=K))
    ls = FakeLabelStudio(LABEL_CONFIG)
    ls.add_task(1, LOOPING_TEXT)
    ls.project.model_version = "acq-r1"
    annotator = services.project_annotator(1, services.schema(LABEL_CONFIG), services.demo_index(DEMOS))
    return ls, services, annotator


def sent(body: dict[str, Any]) -> tuple[int, float, int | None]:
    return demos_in(body), body["temperature"], body.get("seed")


def ladder_says(rung: int) -> tuple[int, float, int | None]:
    sampling = LADDER[rung].sampling(LOOPING_TEXT)
    return LADDER[rung].k(K), sampling.temperature, sampling.seed


def test_a_looping_task_is_annotated_on_the_second_attempt_with_the_next_rung(looping, looping_llm) -> None:
    ls, services, annotator = looping
    labels = services.llm_labels(1)
    first = annotator.annotate_tasks([ls.task_rows[1]])
    mark_status(ls, labels, [ls.task_rows[1]], first, 6)
    assert first[0].reason == "cut_off" and labels.failures()[1].rung == 0
    assert ls.task_rows[1]["data"][STATUS_KEY] == (
        f"LLM failed: cut_off (attempt 1 of 6; rung 0, base: {K} demos, greedy; retrying with a changed request)")
    retrier = FailedTaskRetrier(annotator, labels, lambda: ls, lambda: ls.project.model_version, RetryPolicy(6, 0))
    report = retrier.run_once(now=time.time() + 1)
    assert (report.retried, report.annotated, report.still_failing) == (1, 1, 0)
    shown = ls.shown_prediction(1)
    assert shown is not None and [r["value"]["text"] for r in shown["result"]] == ["Cisplatin"]
    assert ls.task_rows[1]["data"][STATUS_KEY] == "LLM: 1 entities pre-labelled"
    assert labels.failures() == {} and labels.all()[1][1] == [Span(0, 9, "Chemical")]
    base, retry = looping_llm.requests
    assert sent(base) == ladder_says(0) == (K, 0, None)
    assert sent(retry) == ladder_says(1) != sent(base)


def test_a_task_answered_on_a_higher_rung_is_asked_on_that_rung_again(looping, looping_llm) -> None:
    ls, services, annotator = looping
    labels = services.llm_labels(1)
    annotator.annotate_tasks([ls.task_rows[1]])  # the base request loops: cut off
    [answered] = annotator.annotate_tasks([ls.task_rows[1]])  # rung 1 answers
    assert answered.ok and labels.answered_rungs() == {1: (LOOPING_TEXT, 1)}
    # A later re-ask of the same text (a new round, /predict) used to start at the base request, which loops
    # again: one more failed call and "LLM failed" on a task that had its label.
    again, single = annotator.annotate_tasks([ls.task_rows[1]])[0], annotator.annotate_task(ls.task_rows[1])
    assert again.ok and single.ok and (again.variant.rung, single.variant.rung) == (1, 1)
    assert labels.failures() == {} and [sent(b) for b in looping_llm.requests][0] == ladder_says(0)
    assert ladder_says(0) not in [sent(b) for b in looping_llm.requests[1:]]
    ls.task_rows[1]["data"]["text"] = "Aspirin ."  # a new text starts from the base request
    assert annotator.variant_of(ls.task_rows[1], None, labels.answered_rung(1)).rung == 0


def test_live_predict_asks_the_next_rung_after_a_cut_off(looping, looping_llm) -> None:
    ls, services, annotator = looping
    lanes = LLMLanes(services.settings)
    assert predict_with_llm(annotator, [ls.task_rows[1]], lanes, 20.0, "acq-r1") == [[]]  # not annotated
    [[prediction]] = predict_with_llm(annotator, [ls.task_rows[1]], lanes, 20.0, "acq-r1")
    assert [r["value"]["text"] for r in prediction["result"]] == ["Cisplatin"]
    assert [sent(body) for body in looping_llm.requests] == [ladder_says(0), ladder_says(1)]


def test_a_transport_failure_repeats_the_request_and_does_not_climb(looping, looping_llm) -> None:
    ls, services, annotator = looping
    labels = services.llm_labels(1)
    looping_llm.script = [status(503)]  # no answer (LLM_MAX_RETRIES=0): the request was never judged
    first = annotator.annotate_tasks([ls.task_rows[1]])
    mark_status(ls, labels, [ls.task_rows[1]], first, 6)
    assert first[0].reason == "http_error" and labels.failures()[1].rung == 0
    assert ls.task_rows[1]["data"][STATUS_KEY].endswith("retrying the same request)")
    retrier = FailedTaskRetrier(annotator, labels, lambda: ls, lambda: ls.project.model_version, RetryPolicy(6, 0))
    assert retrier.run_once(now=time.time() + 1).still_failing == 1  # the same base request: it loops
    assert (labels.failures()[1].reason, labels.failures()[1].rung) == ("cut_off", 0)
    assert retrier.run_once(now=time.time() + 1).annotated == 1  # now the next rung
    requests = looping_llm.requests
    assert requests[0] == requests[1] and sent(requests[2]) == ladder_says(1)
