"""ModelStore: versioned saves that are atomic; a crashed save never shows up."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import training.store as store_mod
from training.model import StudentTagger
from training.store import ModelStore


@pytest.fixture(scope="module")
def taggers(tiny_encoder: Path) -> tuple[StudentTagger, StudentTagger]:
    torch.manual_seed(1)
    a = StudentTagger.from_pretrained(["Chemical"], tiny_encoder)
    torch.manual_seed(2)
    b = StudentTagger.from_pretrained(["Chemical", "Disease"], tiny_encoder)
    return a, b


def marginals(tagger: StudentTagger) -> np.ndarray:
    return tagger.pool_outputs(["aspirin caused fever"]).marginals[0]


def test_save_list_load(tmp_path: Path, taggers) -> None:
    a, b = taggers
    store = ModelStore(tmp_path / "models")
    assert store.versions() == [] and store.latest() is None
    with pytest.raises(FileNotFoundError):
        store.load()
    v1 = store.save(a, {"dev_f1": 0.5}, {"task-1": 0.25, 7: 0.125}, {"round": 1})
    v2 = store.save(b, {"dev_f1": 0.6}, {"task-2": 0.5})
    assert store.versions() == [v1, v2] and store.latest() == v2
    assert v1.startswith("v0001-") and v2.startswith("v0002-") and sorted([v2, v1]) == [v1, v2]
    assert store.sentence_weights(v1) == {"task-1": 0.25, "7": 0.125}
    assert store.metrics(v1) == {"dev_f1": 0.5}
    manifest = store.manifest(v1)
    assert manifest["round"] == 1 and manifest["version"] == v1
    assert manifest["labels"] == a.labels and "model/labels.json" in manifest["files"]
    assert store.load().labels == b.labels
    np.testing.assert_allclose(marginals(store.load(v1)), marginals(a), atol=1e-6)
    assert store.path(v2) == tmp_path / "models" / v2


@pytest.mark.parametrize("crash_in", ["sentence_weights", "rename"])
def test_crash_mid_save_leaves_previous_version(tmp_path: Path, taggers, monkeypatch, crash_in: str) -> None:
    a, b = taggers
    store = ModelStore(tmp_path)
    old = store.save(a, {}, {})
    real_write = store_mod._write_json

    def write(path: Path, data) -> None:
        if path.name == store_mod.SENTENCE_WEIGHTS:
            assert (path.parent / "model" / "model.safetensors").is_file()  # weights already written
            raise OSError("disk full")
        real_write(path, data)

    def rename(src, dst) -> None:
        assert (Path(src) / store_mod.MANIFEST).is_file()  # everything written, only the rename left
        raise OSError("killed")

    if crash_in == "sentence_weights":
        monkeypatch.setattr(store_mod, "_write_json", write)
    else:
        monkeypatch.setattr(store_mod.os, "rename", rename)
    # A hard crash gets no chance to clean up: keep the temp dir to prove it is never listed.
    monkeypatch.setattr(store_mod.shutil, "rmtree", lambda *a, **k: None)
    with pytest.raises(OSError):
        store.save(b, {}, {"x": 1.0})
    monkeypatch.undo()
    assert any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())
    assert store.versions() == [old] and store.latest() == old
    assert store.load().labels == a.labels
    # The next save still works and gets the next number.
    new = store.save(b, {}, {})
    assert store.versions() == [old, new] and new.startswith("v0002-")


def test_version_dir_without_manifest_is_ignored(tmp_path: Path, taggers) -> None:
    a, _ = taggers
    store = ModelStore(tmp_path)
    v1 = store.save(a, {}, {})
    partial = tmp_path / "v0002-20991231T000000Z"
    (partial / "model").mkdir(parents=True)
    (partial / "metrics.json").write_text(json.dumps({}))
    assert store.versions() == [v1] and store.latest() == v1
    with pytest.raises(FileNotFoundError):
        store.load(partial.name)
    assert store.save(a, {}, {}).startswith("v0003-")  # numbers are never reused


def test_remove_stale_temps(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    (tmp_path / ".tmp-old").mkdir()
    assert store.remove_stale_temps(older_than_s=3600) == []
    assert store.remove_stale_temps(older_than_s=-1) == [".tmp-old"]
