from pathlib import Path

from backend.state import ProjectState


def test_update_persists_and_merges(tmp_path: Path) -> None:
    state = ProjectState(tmp_path, 7)
    assert state.read() == {}
    state.update(model_version="acq-r1", round=1)
    state.update(round=2)
    fresh = ProjectState(tmp_path, 7)  # another process sees the same state
    assert fresh.read() == {"model_version": "acq-r1", "round": 2}
    assert fresh.get("missing", "default") == "default"


def test_projects_are_separate_and_no_temp_files_left(tmp_path: Path) -> None:
    ProjectState(tmp_path, 1).update(model_version="a")
    ProjectState(tmp_path, 2).update(model_version="b")
    assert ProjectState(tmp_path, 1).get("model_version") == "a"
    assert ProjectState(tmp_path, 2).get("model_version") == "b"
    leftovers = [p.name for p in (tmp_path / "projects").rglob(".state-*")]
    assert leftovers == []


def test_corrupt_file_reads_as_empty(tmp_path: Path) -> None:
    state = ProjectState(tmp_path, 3)
    state.update(x=1)
    state.path.write_text("{not json")
    assert ProjectState(tmp_path, 3).read() == {}
