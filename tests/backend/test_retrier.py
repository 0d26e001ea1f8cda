"""Failed LLM calls: retried with backoff until annotated, marked meanwhile, never "no entities"."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.acquire import acquire_round
from backend.retrier import STATUS_KEY, FailedTaskRetrier, RetryPolicy, status_text
from tests.backend.fake_label_studio import FakeLabelStudio
from tests.backend.loop_fakes import LABEL_CONFIG, FakeServices, KnownAnswersLLM

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
