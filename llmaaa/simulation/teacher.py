"""The simulated teacher: gold labels of known sentences, corrupted by the noise model.

This is a SIMULATION of an LLM annotator. It can only answer sentences it was given with their gold
spans; `answer` returns None for any other text. `parse_prompt` reads a chat prompt rendered from
`backend/annotator/prompts/ner.v1.jinja` back into its query and demonstrations, so the simulated
HTTP server (`llmaaa.simulation.server`) and in-process callers (`llmaaa simulate`) share one teacher.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from llmaaa.simulation.noise import NOISE_KINDS, NoiseModel, SystematicNoiseModel, make_noise_model
from training.data import Example, label_set
from training.spans import Span

log = logging.getLogger(__name__)

INPUT_MARK = "Input: "
OUTPUT_MARK = "\nOutput:"


class PromptFormatError(ValueError):
    """The chat messages do not hold an `Input: ...\\nOutput:` query in the last user message."""


def message_text(content: Any) -> str:
    """A message's text: a string, or the text parts of an OpenAI content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content
                       if isinstance(p, Mapping) and p.get("type") == "text")
    return ""


def parse_prompt(messages: Sequence[Mapping[str, Any]]) -> tuple[str, list[tuple[str, str]]]:
    """(query text, [(demo text, demo output JSON string), ...]) from ner.v1 chat messages.

    The query is the text after the LAST `Input: ` of the last user message, up to the following
    `\\nOutput:` (the prompt contract in docs/architecture.md). Demos are the earlier
    `Input: <text>\\nOutput: <json>` blocks of that message, in prompt order.
    """
    users = [m for m in messages if isinstance(m, Mapping) and m.get("role") == "user"]
    if not users:
        raise PromptFormatError("no user message")
    content = message_text(users[-1].get("content"))
    at = content.rfind(INPUT_MARK)
    if at < 0:
        raise PromptFormatError("no 'Input: ' in the last user message")
    begin = at + len(INPUT_MARK)
    stop = content.find(OUTPUT_MARK, begin)
    query = content[begin:] if stop < 0 else content[begin:stop]
    demos: list[tuple[str, str]] = []
    # Each earlier block is "Input: <text>\nOutput: <json>" followed by a blank line (or the query).
    for block in content[:at].split(INPUT_MARK)[1:]:
        text, sep, output = block.partition("\nOutput: ")
        if sep:
            demos.append((text, output.strip()))
    return query, demos


def demo_surface_forms(demos: Iterable[tuple[str, str]]) -> list[str]:
    """Entity mentions (`span` values) in the demonstrations' output JSON; unparsable outputs are skipped."""
    forms: list[str] = []
    for _text, output in demos:
        try:
            entities = json.loads(output).get("entities", [])
        except (ValueError, AttributeError):
            continue
        if isinstance(entities, list):
            forms.extend(e["span"] for e in entities
                         if isinstance(e, Mapping) and isinstance(e.get("span"), str))
    return forms


class SimulatedTeacher:
    """Answers NER queries for known sentences with noisy gold entities (a SIMULATION of an LLM).

    `examples`: sentences with gold spans (the first example wins when a text occurs twice);
    `noise`, `seed`, `demo_aware`: see `llmaaa.simulation.noise`; `kind`: "random" (errors drawn per
    occurrence) or "systematic" (errors tied to the surface form). Wrong-type errors draw from the
    labels that occur in `examples` unless `labels` is given.
    """

    def __init__(self, examples: Iterable[Example], noise: float, seed: int = 0, demo_aware: bool = False,
                 labels: Sequence[str] | None = None, kind: str = "random") -> None:
        if kind not in NOISE_KINDS:
            raise ValueError(f"noise kind must be one of {NOISE_KINDS}, not {kind!r}")
        self._gold: dict[str, list[Span]] = {}
        self._by_squashed: dict[str, str] = {}
        conflicts = 0
        examples = list(examples)
        for ex in examples:
            if ex.text in self._gold:
                conflicts += sorted(self._gold[ex.text]) != sorted(ex.spans)
                continue
            self._gold[ex.text] = list(ex.spans)
            self._by_squashed.setdefault(_squash(ex.text), ex.text)
        if conflicts:
            log.info("simulated teacher: %d repeated texts with different gold spans; the first is used",
                     conflicts)
        self.labels = sorted(labels) if labels is not None else label_set(examples)
        self.model: NoiseModel | SystematicNoiseModel = make_noise_model(kind, self.labels, noise, seed, demo_aware)

    @property
    def noise(self) -> float:
        return self.model.noise

    @property
    def kind(self) -> str:
        return self.model.kind

    @property
    def seed(self) -> int:
        return self.model.seed

    @property
    def demo_aware(self) -> bool:
        return self.model.demo_aware

    def __len__(self) -> int:
        return len(self._gold)

    def _known(self, text: str) -> str | None:
        if text in self._gold:
            return text
        # A client may have normalised whitespace (e.g. stripped the text): match it up to that.
        return self._by_squashed.get(_squash(text))

    def answer_spans(self, query_text: str, demo_surface_forms: Iterable[str] = ()) -> list[Span] | None:
        """Noisy spans as character offsets into the known sentence; None for an unknown text."""
        text = self._known(query_text)
        if text is None:
            return None
        return self.model.corrupt(text, self._gold[text], demo_surface_forms)

    def answer(self, query_text: str, demo_surface_forms: Iterable[str] = ()) -> list[dict[str, str]] | None:
        """The reply an LLM would give: `[{"span": mention, "type": label}, ...]` in text order, or None."""
        text = self._known(query_text)
        if text is None:
            return None
        spans = self.model.corrupt(text, self._gold[text], demo_surface_forms)
        return [{"span": text[s.start : s.end], "type": s.label} for s in spans]


def _squash(text: str) -> str:
    return " ".join(text.split())
