"""Fakes for the loop's stage tests: a chat client that answers from known entities, and Services on fakes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from backend.annotator.client import GREEDY, Completion, LLMCallError, Sampling
from backend.composition import Services
from backend.labeling_config import LabelSpec, build_label_config
from backend.settings import Settings
from tests.backend.annotator.annot_fakes import FakeEmbedder

LABEL_CONFIG = build_label_config([LabelSpec("Chemical", "a chemical or drug"), LabelSpec("Disease", "a disease")])


class KnownAnswersLLM:
    """Answers each query with the entities it was given for that text; texts in `failing` time out."""

    model = "known-answers"

    def __init__(self, answers: Mapping[str, list[tuple[str, str]]], failing: Sequence[str] = ()) -> None:
        self.answers = dict(answers)
        self.failing = set(failing)
        self.asked: list[str] = []

    def _query(self, messages: Sequence[Mapping[str, str]]) -> str:
        # The query is the last known text in the prompt (demonstrations come before it).
        user = messages[-1]["content"]
        found = [(user.rfind(json.dumps(t, ensure_ascii=False)[1:-1]), t) for t in [*self.answers, *self.failing]]
        found = [(pos, t) for pos, t in found if pos >= 0]
        if not found:
            raise AssertionError(f"the fake LLM knows no text in: {user[-200:]!r}")
        return max(found)[1]

    def complete(self, messages: Sequence[Mapping[str, str]], json_schema: dict[str, Any] | None = None,
                 sampling: Sampling = GREEDY) -> Completion:
        text = self._query(messages)
        self.asked.append(text)
        if text in self.failing:
            raise LLMCallError("timeout", "no answer within 5 s", attempts=3)
        body = json.dumps({"entities": [{"span": s, "type": t} for s, t in self.answers[text]]})
        return Completion(body, 50, 10, self.model, 0.01, finish_reason="stop")


class FakeServices(Services):
    """The real composition root, with the LLM and the embedder swapped for fakes."""

    def __init__(self, data_dir: Path, llm: KnownAnswersLLM, **settings: Any) -> None:
        super().__init__(Settings(llmaaa_data_dir=data_dir, openai_base_url="http://127.0.0.1:9/v1",
                                  llm_concurrency=2, **settings))
        self.llm = llm
        self.fake_embedder = FakeEmbedder()

    def llm_client(self) -> Any:
        return self.llm

    def embedder(self) -> Any:
        return self.fake_embedder
