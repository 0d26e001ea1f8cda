"""Request-body checks: project ids in range, and a message naming the field for each malformed body."""

from __future__ import annotations

from typing import Any

import pytest

from backend.labelstudio import MAX_PROJECT_ID, project_id_of
from backend.protocol import BadRequest, TooManyTasks, predict_request, setup_request, webhook_request

CONFIG = "<View><Labels name='l' toName='t'><Label value='A'/></Labels><Text name='t' value='$text'/></View>"


@pytest.mark.parametrize("value, expected", [
    (3, 3), ("3", 3), ("3.1700000000", 3), ({"id": 60}, 60), ("007", 7), (MAX_PROJECT_ID, MAX_PROJECT_ID),
])
def test_project_ids_label_studio_sends_are_read(value: Any, expected: int) -> None:
    assert project_id_of(value) == expected


@pytest.mark.parametrize("value", [
    True, False, {"id": True},             # bools are ints in Python: `true` used to become project 1 / "True"
    -5, 0, "-5", "0",                      # not a database id
    10**300, MAX_PROJECT_ID + 1, "9" * 300,  # used to become a file name too long (a 500)
    "\u0663", "\u0663.1", "\uff13",         # Arabic-Indic and full-width digits pass str.isdigit()
    3.0, 60.1, "3.x", " 3", "3 ", "+3", "", None, [3], {"id": "abc"}, {},
])
def test_anything_but_a_positive_ascii_integer_in_range_is_refused(value: Any) -> None:
    with pytest.raises(ValueError) as info:
        project_id_of(value)
    assert len(str(info.value)) < 200, "the message must not echo a huge value"


def test_setup_checks_each_field() -> None:
    ok = setup_request({"project": "3.17", "schema": CONFIG, "hostname": "http://ls:8080", "access_token": "t"})
    assert (ok.project_id, ok.hostname, ok.access_token) == (3, "http://ls:8080", "t")
    for body, word in [
        ({"project": "3.17", "schema": 5}, "schema"),
        ({"project": "3.17", "schema": CONFIG, "hostname": 5}, "hostname"),
        ({"project": "3.17", "schema": CONFIG, "hostname": "file:///etc/passwd"}, "hostname"),
        ({"project": "3.17", "schema": CONFIG, "access_token": ["x"]}, "access_token"),
        ({"project": True, "schema": CONFIG}, "project"),
    ]:
        with pytest.raises(BadRequest, match=word):
            setup_request(body)


def test_predict_checks_each_level() -> None:
    task = {"id": 1, "data": {"text": "x"}}
    assert predict_request({"tasks": [task], "project": 3, "params": {"context": None}}, 10).project_id == 3
    assert predict_request({"tasks": [{**task, "project": 4}]}, 10).project_id == 4
    for body, word in [
        ({"tasks": [{"id": 1, "data": ["x"]}], "project": 3}, r"tasks\[0\].data"),
        ({"tasks": [{"id": 1.5, "data": {}}], "project": 3}, r"tasks\[0\].id"),
        ({"tasks": [{"id": True}], "project": 3}, r"tasks\[0\].id"),
        ({"tasks": [task], "project": 3, "params": []}, "params"),
        ({"tasks": [task], "project": 3, "params": {"context": "x"}}, "context"),
        ({"tasks": [task], "project": 3, "label_config": 7}, "label_config"),
        ({"tasks": [task], "project": -1}, "project"),
        ({"tasks": "x", "project": 3}, "tasks"),
    ]:
        with pytest.raises(BadRequest, match=word):
            predict_request(body, 10)
    with pytest.raises(TooManyTasks, match="MAX_TASKS_PER_REQUEST") as info:
        predict_request({"tasks": [task] * 11, "project": 3}, 10)
    assert info.value.status == 413


def test_webhook_checks_each_level() -> None:
    good = {"action": "ANNOTATION_CREATED", "project": {"id": 3, "label_config": CONFIG},
            "task": {"id": 9, "data": {"text": "x"}}, "annotation": {"id": 2, "result": []}}
    assert webhook_request(good).project_id == 3
    for body, word in [
        ({"action": "START_TRAINING", "project": 60}, "project object"),
        ({"action": "START_TRAINING", "project": "60.1"}, "project object"),
        ({"action": "START_TRAINING", "project": {"id": 10**300}}, "project.id"),
        ({"action": "START_TRAINING", "project": {"id": 3, "label_config": 5}}, "label_config"),
        ({**good, "task": {"data": {"text": "x"}}}, "task.id"),
        ({**good, "task": {"id": 9, "data": "x"}}, "task.data"),
        ({**good, "annotation": {"id": "a"}}, "annotation.id"),
        ({**good, "annotation": {"result": {}}}, "annotation.result"),
        ({"action": "ANNOTATIONS_DELETED", "project": {"id": 3}, "annotations": [1]}, "annotations"),
        ({"action": "ANNOTATIONS_DELETED", "project": {"id": 3}, "annotations": [{"id": 1.5}]}, "annotations"),
        ({"action": ["START_TRAINING"], "project": {"id": 3}}, "action"),
    ]:
        with pytest.raises(BadRequest, match=word):
            webhook_request(body)
