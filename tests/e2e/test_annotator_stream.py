"""The loop as an annotator meets it, in a real Chromium against Label Studio 1.23.2 (issue 11).

One walk (module fixture) does what a person does: log in, Label All Tasks, read the pre-labels, submit
5 tasks, wait for the retrain the submissions trigger, go on labeling, open a pre-labelled task from the
Data Manager, open a task whose LLM call failed. Each test then checks one thing the walk saw, so a
known defect (xfail) never hides the checks after it.

Screenshots go to the test's tmp dir; with LLMAAA_README_SHOTS=1 the two README figures are also written
to docs/figures/ (labeling-prelabels.png, data-manager-after-round.png).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from backend.labelstudio import connect, iter_tasks, submitted_annotation
from backend.settings import Settings
from backend.setup_project import preannotate, setup_project
from backend.state import ProjectState
from llmaaa.services import LabelStudioConfig, Service
from tests.conftest import BC5CDR_LABELS, REPO
from tests.e2e.annotator import Annotator, Served, launch, region_texts
from tests.e2e.stack import CHROMIUM, loop_stack, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser]

N_TASKS = 30
N_PREANNOTATED = 20
POISONED_POSITIONS = (10, 11)  # in id order: pre-annotated, but never reached by the first 6 stream tasks
README_SHOTS = {"labeling-prelabels.png", "data-manager-after-round.png"}
HIDDEN_DM_COLUMNS = ["inner_id", "cancelled_annotations", "annotators", "annotations_results", "annotations_ids",
                     "predictions_results", "file_upload", "storage_filename", "created_at", "updated_at",
                     "updated_by", "avg_lead_time", "draft_exists", "data.ref_id"]


@dataclass
class Walk:
    project_id: int
    version_before: str
    prelabels_before: dict[int, list[tuple[str, str]]]  # task id -> its LLM spans before the retrain
    failed_ids: list[int]
    stream: list[tuple[Served, list[tuple[str, str]]]] = field(default_factory=list)  # tasks served, highlights seen
    submitted: list[int] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    project_version_after: str | None = None
    round_order: list[int] = field(default_factory=list)
    head_expected: int | None = None
    head: tuple[Served, list[tuple[str, str]]] | None = None
    head_prediction: list[tuple[str, str]] = field(default_factory=list)
    reopened: tuple[Served, list[tuple[str, str]]] | None = None  # from the Data Manager (quick view)
    restreamed: tuple[Served, list[tuple[str, str]]] | None = None  # the same task, served by the stream
    reopened_expected: list[tuple[str, str]] = field(default_factory=list)
    failed_view_text: str = ""
    failed_row_text: str = ""
    failed_task_data: dict[str, Any] = field(default_factory=dict)
    shots: list[Path] = field(default_factory=list)


def chromium_path() -> Path:
    path = Path(os.environ.get("LLMAAA_CHROMIUM", str(CHROMIUM)))
    if not path.exists():
        pytest.fail(f"{path} not found: `apt-get install -y chromium` (.ci/run does it), or set LLMAAA_CHROMIUM")
    return path


@pytest.fixture(scope="module")
def walk(label_studio: LabelStudioConfig, fake_llm: Service, bc5cdr_dir: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    from playwright.sync_api import sync_playwright

    chromium = chromium_path()
    work = tmp_path_factory.mktemp("e2e-stream")
    poisoned: set[str] = set()
    with loop_stack(label_studio, fake_llm, work, poisoned) as stack:
        ls = connect(label_studio.url, label_studio.token)
        settings = Settings(**{k.lower(): v for k, v in stack.env.items()})
        report = setup_project(ls, settings, f"e2e: annotator stream {time.time_ns()}", BC5CDR_LABELS,
                               bc5cdr_dir / "train.jsonl", N_TASKS, stack.backend.url)
        pid = report.project_id
        tasks = sorted(iter_tasks(ls, pid), key=lambda t: t["id"])
        failed_ids = [tasks[i]["id"] for i in POISONED_POSITIONS]
        poisoned.update(tasks[i]["data"]["text"] for i in POISONED_POSITIONS)
        stored, failed, version = preannotate(ls, pid, settings, N_PREANNOTATED, progress=False)
        assert (stored, failed) == (N_PREANNOTATED - len(failed_ids), len(failed_ids))
        before = {int(p.task): region_texts({"result": p.result}) for p in ls.predictions.list(project=pid)}
        result = Walk(pid, version, before, failed_ids)

        with sync_playwright() as pw:
            browser = launch(pw, chromium)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            person = Annotator(page, label_studio.url, work / "shots")
            try:
                person.login(label_studio.username, label_studio.password)
                served = person.label_all_tasks(pid)
                result.stream.append((served, person.highlights()))
                result.shots.append(person.screenshot("labeling-prelabels.png"))
                for _ in range(5):
                    result.submitted.append(served.task_id)
                    served = person.submit(pid)
                    result.stream.append((served, person.highlights()))
                state = ProjectState(stack.data_dir, pid)

                def retrained() -> dict[str, Any] | None:
                    current = state.read()
                    done = (current.get("last_retrain") or {}).get("status") == "ok"
                    return current if done and (current.get("job") or {}).get("stage") == "finished" else None

                result.state = wait_for("the retrain the 5 submissions queued", retrained, timeout=900, interval=2)
                result.project_version_after = ls.projects.get(id=pid).model_version
                result.round_order = list((result.state["last_retrain"].get("acquisition") or {}).get("order") or [])
                # The annotator finishes the task already open (Label Studio locked it before the retrain) ...
                result.submitted.append(served.task_id)
                annotated = {t["id"] for t in iter_tasks(ls, pid) if submitted_annotation(t) is not None}
                result.head_expected = next((t for t in result.round_order if t not in annotated | {served.task_id}),
                                            None)
                served = person.submit(pid)
                # ... and the next one is what the round put first.
                result.head = (served, person.highlights())
                round_preds = [p for p in ls.predictions.list(project=pid)
                               if p.task == served.task_id and p.model_version == result.project_version_after]
                result.head_prediction = region_texts({"result": round_preds[0].result}) if round_preds else []
                result.shots.append(person.screenshot("labeling-round-head.png"))

                # A task that showed pre-labels before the retrain and that the round did not pick.
                annotated.update(result.submitted)
                keep = next(tid for tid, texts in sorted(before.items())
                            if texts and tid not in annotated and tid not in result.round_order
                            and tid != served.task_id)
                result.reopened_expected = before[keep]
                reopened = person.open_task(pid, keep)
                result.reopened = (reopened, person.highlights())
                result.shots.append(person.screenshot("reopened-after-round.png"))
                # The same task through the labeling stream: a Data Manager tab holding just that task, then
                # "Label Tasks As Displayed" (the stream's next-task path, as Label All Tasks once the round's
                # batch is done; the random tail makes waiting for it there non-deterministic).
                tab = ls.views.create(project=pid, data=one_task_view("one task", keep))
                restreamed = person.label_tasks_as_displayed(pid, int(tab.id))
                result.restreamed = (restreamed, person.highlights())
                result.shots.append(person.screenshot("restreamed-after-round.png"))

                # The backend's retrier re-asks failed tasks in the background and writes their status; give
                # it a few of its (shortened) intervals before the annotator looks.
                wait_for_quietly(lambda: "failed" in str(ls.tasks.get(id=failed_ids[0]).data).lower(), 60)
                person.open_task(pid, failed_ids[0])
                result.failed_view_text = person.labeling_text()
                result.shots.append(person.screenshot("failed-task.png"))
                # The Data Manager as a reviewer would set it up after a round: queue order, scores, status.
                queue_tab = ls.views.create(project=pid, data={
                    "title": "Queue after the round", "ordering": ["tasks:predictions_score"],
                    "columnsDisplayType": {"tasks:data.llm_label_weight": "Number"},
                    "hiddenColumns": {"explore": [f"tasks:{c}" for c in HIDDEN_DM_COLUMNS], "labeling": []},
                    "filters": {"conjunction": "and", "items": []}})
                page.goto(f"{label_studio.url}/projects/{pid}/data?tab={queue_tab.id}")
                page.get_by_role("button", name="Label All Tasks").wait_for(timeout=60_000)
                page.wait_for_timeout(2000)
                result.shots.append(person.screenshot("data-manager-after-round.png"))
                failed_tab = ls.views.create(project=pid, data=one_task_view("the failed task", failed_ids[0]))
                page.goto(f"{label_studio.url}/projects/{pid}/data?tab={failed_tab.id}")
                page.get_by_role("button", name="Label All Tasks").wait_for(timeout=60_000)
                page.wait_for_timeout(1500)
                result.failed_row_text = person.data_manager_row_text(failed_ids[0])
                result.failed_task_data = dict(ls.tasks.get(id=failed_ids[0]).data or {})
            finally:
                browser.close()
    if os.environ.get("LLMAAA_README_SHOTS") == "1":
        figures = REPO / "docs" / "figures"
        for shot in result.shots:
            if shot.name in README_SHOTS:
                shutil.copy(shot, figures / shot.name)
    yield result


class StillBroken(AssertionError):
    """A desired behaviour of issue 11 is still missing. The xfail marks accept only this exception, so a
    broken walk (a fixture error) is reported as an error, never as the expected failure."""


def expect(condition: bool, message: object) -> None:
    if not condition:
        raise StillBroken(message)


def one_task_view(title: str, task_id: int) -> dict[str, Any]:
    """A Data Manager tab holding just one task."""
    return {"title": title, "filters": {"conjunction": "and", "items": [
        {"filter": "filter:tasks:id", "operator": "equal", "type": "Number", "value": task_id}]}}


def wait_for_quietly(check: Any, timeout: float) -> bool:
    try:
        return bool(wait_for("a condition checked by a test below", check, timeout, interval=2))
    except AssertionError:
        return False


def same_words(highlights: list[tuple[str, str]], expected: list[tuple[str, str]]) -> bool:
    return sorted(highlights) == sorted(expected)


# ---------------------------------------------------------------- what works today


def test_prelabels_are_rendered_on_the_right_words(walk: Walk) -> None:
    served, seen = walk.stream[0]
    expected = walk.prelabels_before[served.task_id]
    assert expected, "the first streamed task should have LLM spans (BC5CDR sentence with entities)"
    assert [p["model_version"] for p in served.predictions] == [walk.version_before]
    assert same_words(seen, expected), (seen, expected)


def test_every_task_streamed_before_the_retrain_shows_its_prelabels(walk: Walk) -> None:
    for served, seen in walk.stream:
        assert served.via == "next"
        assert same_words(seen, walk.prelabels_before.get(served.task_id, [])), (served.task_id, seen)
    assert [s.task_id for s, _ in walk.stream[:6]] == sorted(walk.prelabels_before)[:6]  # sequential, pre-round


def test_five_submissions_retrain_the_student_and_start_a_round(walk: Walk) -> None:
    assert len(walk.submitted) == 6 and len(set(walk.submitted)) == 6
    last = walk.state["last_retrain"]
    assert walk.state["student_version"] == last["version"]
    assert walk.project_version_after == walk.state["model_version"] == "acq-r1"
    assert walk.round_order, last.get("acquisition")


def test_next_task_after_the_retrain_is_the_rounds_head(walk: Walk) -> None:
    assert walk.head is not None and walk.head_expected is not None
    assert walk.head[0].task_id == walk.head_expected


def test_the_rounds_head_shows_its_prelabels(walk: Walk) -> None:
    assert walk.head is not None
    served, seen = walk.head
    assert [p["model_version"] for p in served.predictions] == ["acq-r1"]
    assert same_words(seen, walk.head_prediction), (seen, walk.head_prediction)


def test_screenshots_are_saved(walk: Walk) -> None:
    assert {p.name for p in walk.shots} >= README_SHOTS
    assert all(p.stat().st_size > 10_000 for p in walk.shots)


def test_a_task_prelabelled_before_the_retrain_keeps_them_in_the_data_manager_view(walk: Walk) -> None:
    # Label Studio's task view (GET /api/tasks/<id>) returns predictions of every version, and the labeling
    # UI shows the old LLM prediction: opening the task from the Data Manager is not affected by item 1.
    assert walk.reopened is not None and walk.reopened_expected
    served, seen = walk.reopened
    assert served.via == "task" and served.task_id not in walk.round_order
    assert same_words(seen, walk.reopened_expected), (served.task_id, seen, walk.reopened_expected)


def test_a_task_prelabelled_before_the_retrain_still_shows_them_in_the_stream(walk: Walk) -> None:
    # Issue 11 item 1 (fixed by the queue publisher carrying every pre-label into each round): the stream
    # shows only predictions at the project's model_version, so this needs the task re-published at acq-r1.
    assert walk.restreamed is not None and walk.reopened is not None
    served, seen = walk.restreamed
    assert served.via == "next" and served.task_id == walk.reopened[0].task_id
    assert [p["model_version"] for p in served.predictions] == ["acq-r1"]
    assert same_words(seen, walk.reopened_expected), (served.task_id, seen, walk.reopened_expected)


def test_a_task_whose_llm_call_failed_is_marked_in_the_data_manager(walk: Walk) -> None:
    # Issue 11 items 2 and 4 (the retrier writes llm_status): the row says the LLM failed, and why.
    assert "failed" in walk.failed_row_text.lower(), walk.failed_row_text
    assert "failed" in str(walk.failed_task_data.get("llm_status", "")).lower(), walk.failed_task_data


# ---------------------------------------------------------------- issue 11 item 4


def test_the_labeling_view_tells_a_failed_llm_call_from_no_entities(walk: Walk) -> None:
    """The generated config shows `llm_status` above the text: "LLM failed: ..." on the failed task."""
    assert walk.failed_view_text  # the task did open
    expect("llm failed" in walk.failed_view_text.lower(), walk.failed_view_text[:500])
