import json
from pathlib import Path

import pytest

from backend.labeling_config import load_labels_file as load_labels
from backend.setup_project import read_task_texts


def test_labels_json_and_text_forms(tmp_path: Path) -> None:
    j = tmp_path / "labels.json"
    j.write_text(json.dumps({"Chemical": "drugs", "Disease": "illnesses"}))
    assert [(s.value, s.description) for s in load_labels(j)] == [("Chemical", "drugs"), ("Disease", "illnesses")]
    t = tmp_path / "labels.txt"
    t.write_text("# comment\nPER: people\nORG\n")
    assert [(s.value, s.description) for s in load_labels(t)] == [("PER", "people"), ("ORG", "ORG")]
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(ValueError, match="no labels"):
        load_labels(tmp_path / "empty.json")


def test_tasks_from_jsonl_and_text_keep_stable_ref_ids(tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"tokens": ["Aspirin", "helps", "."], "tags": ["B-Chemical", "O", "O"]}) + "\n\n"
                    + json.dumps({"text": "Raw text here"}) + "\n")
    tasks = list(read_task_texts(data))
    status = {"llm_status": "LLM: not asked yet"}  # the generated config shows it; never "undefined"
    assert tasks == [{"text": "Aspirin helps .", "ref_id": "train-0", **status},
                     {"text": "Raw text here", "ref_id": "train-2", **status}]
    assert list(read_task_texts(data, limit=1)) == tasks[:1]
    plain = tmp_path / "notes.txt"
    plain.write_text("first line\n\nsecond line\n")
    assert [t["ref_id"] for t in read_task_texts(plain)] == ["notes-0", "notes-2"]


def test_bad_jsonl_line_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"tokens": ["a"], "tags": ["O"]}\n{oops\n')
    with pytest.raises(ValueError, match=r"x.jsonl:2"):
        list(read_task_texts(bad))
