"""The web model's demonstrations (`DemoSync` as `NERBackendModel` wires it): which verified tasks become demos,
and that a refresh reads the LLM-label table once, not once per task (issue 13)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from backend_fakes import CONFIG, FakeChat, HashEmbedder, fake_settings
from fake_label_studio import FakeLabelStudio

from backend.labelstudio import LabelStudioError
from backend.llm_labels import LLMLabelStore
from backend.model import NERBackendModel
from backend.registry import Runtime
from training.spans import Span

PROJECT = 5


def chemical(text: str, word: str) -> list[dict[str, Any]]:
    start = text.index(word)
    return [{"from_name": "label", "to_name": "text", "type": "labels",
             "value": {"start": start, "end": start + len(word), "text": word, "labels": ["Chemical"]}}]


@pytest.fixture
def store_reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every read of a real `LLMLabelStore`'s labels, by method."""
    reads: Counter[str] = Counter()

    def counted(name: str) -> Callable[..., Any]:
        real = getattr(LLMLabelStore, name)

        def read(self: LLMLabelStore, *args: Any, **kwargs: Any) -> Any:
            reads[name] += 1
            return real(self, *args, **kwargs)
        return read

    for name in ("all", "texts"):
        monkeypatch.setattr(LLMLabelStore, name, counted(name))
    return reads


def model_over(ls: FakeLabelStudio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> NERBackendModel:
    """The model, its background demo load over (it found Label Studio down), then `ls` reachable."""
    reachable: list[FakeLabelStudio] = []

    def connect(self: NERBackendModel) -> FakeLabelStudio:
        if not reachable:
            raise LabelStudioError("down")
        return reachable[0]

    monkeypatch.setattr(NERBackendModel, "_ls", connect)
    settings = fake_settings(tmp_path, retrain_holdout_fraction=0.0)  # no evaluation split: every task may count
    model = NERBackendModel(PROJECT, CONFIG, Runtime(settings, client=FakeChat(), embedder=HashEmbedder()))
    assert model.wait_demos(15)
    reachable.append(ls)
    return model


def refresh(model: NERBackendModel) -> None:
    """A synchronous refresh (it retries while the background one is still releasing its lock)."""
    deadline = time.monotonic() + 15
    while not model.demo_sync.refresh():
        assert time.monotonic() < deadline, "the demo refresh never ran"
        time.sleep(0.01)


def test_a_refresh_reads_the_llm_labels_once_and_keeps_flagged_tasks_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_reads: Counter[str]) -> None:
    ls = FakeLabelStudio(CONFIG, PROJECT)
    labels = LLMLabelStore(tmp_path, PROJECT)
    for tid in range(1, 41):
        text = f"sentence {tid} with aspirin"
        if tid <= 30:  # the LLM annotated 1-30 (and found nothing in them): an empty submission confirms it
            labels.put(tid, text, [], "llm")
        ls.add_task(tid, text, annotation=chemical(text, "aspirin") if tid > 35 else [])
    labels.put(7, "an older text of task 7", [Span(0, 2, "Chemical")], "llm")  # the label is of another text

    model = model_over(ls, tmp_path, monkeypatch)
    assert sum(store_reads.values()) == 0  # Label Studio was down: nothing to check against the table
    refresh(model)
    demos = {d.text for d in model.demos.nearest("aspirin", 40)}
    # 1-30 minus 7 (empty, LLM-labelled), 36-40 (with a span); 31-35 are flagged: empty, never LLM-annotated
    assert demos == {f"sentence {t} with aspirin" for t in [*range(1, 7), *range(8, 31), *range(36, 41)]}
    assert sum(store_reads.values()) == 1, store_reads  # one read for 35 empty submissions, not 35
    refresh(model)
    assert sum(store_reads.values()) == 2
    model.close()


def test_one_webhook_event_reads_the_table_only_for_an_empty_submission(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_reads: Counter[str]) -> None:
    model = model_over(FakeLabelStudio(CONFIG, PROJECT), tmp_path, monkeypatch)
    refresh(model)
    before = sum(store_reads.values())
    text = "aspirin again"
    model.demo_sync.apply({"id": 50, "data": {"text": text}}, {"id": 500, "result": chemical(text, "aspirin")})
    assert sum(store_reads.values()) == before  # spans: a demo whatever the LLM did
    model.demo_sync.apply({"id": 51, "data": {"text": "nothing here"}}, {"id": 510, "result": []})
    assert sum(store_reads.values()) == before + 1
    assert {d.text for d in model.demos.nearest("aspirin", 5)} == {text}  # 51 is flagged: never LLM-annotated
    model.close()
