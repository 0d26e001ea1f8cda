"""Versioned prompt templates (`prompts/<name>.<version>.jinja`) rendered into chat messages.

`DEFAULT_TEMPLATE_VERSION` (ner.v2) delimits all outside text as JSON strings (the `json` filter), so a
task text cannot fake a demonstration or a new query; ner.v1 is kept for the record and old caches.
The reply cache key covers the template (id and content hash) and every rendered message.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from backend.labeling_config import LabelSpec
from training.spans import Span

PROMPTS_DIR = Path(__file__).with_name("prompts")
_ROLE_LINE = re.compile(r"^### (system|user|assistant)[ \t]*$", re.MULTILINE)
_NAME = re.compile(r"[A-Za-z0-9_-]+")
DEFAULT_TEMPLATE_NAME = "ner"
DEFAULT_TEMPLATE_VERSION = "v2"
# Line breaks that JSON leaves raw but a reader (or a model) may take as a new line.
_RAW_BREAKS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_text(value: object) -> str:
    """One-line JSON for text shown to the LLM: quotes, backslashes and every line break escaped.

    Non-ASCII stays literal (`ensure_ascii=False`): the LLM must copy "µg" as "µg", not as an escape.
    """
    out = json.dumps(value, ensure_ascii=False)
    for raw, escaped in _RAW_BREAKS.items():
        out = out.replace(raw, escaped)
    return out


@dataclass(frozen=True)
class Demo:
    """A human-verified example shown to the LLM: its text and its spans."""

    text: str
    spans: list[Span] = field(default_factory=list)

    def output(self) -> str:
        """The reply we want for this text: compact JSON, entities in text order."""
        return entities_json(self.text, self.spans)


def entities_json(text: str, spans: Sequence[Span]) -> str:
    entities = [
        {"span": text[s.start : s.end], "type": s.label}
        for s in sorted(spans, key=lambda s: (s.start, s.end, s.label))
        if 0 <= s.start < s.end <= len(text)
    ]
    # ensure_ascii=False: the LLM must copy "µg" as "µg", not as an escape sequence.
    out = json.dumps({"entities": entities}, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in _RAW_BREAKS.items():  # one line, whatever the spans hold
        out = out.replace(raw, escaped)
    return out


class PromptTemplate:
    """One prompt version. Sections start at lines `### system` / `### user` (/ `### assistant`).

    The source is split into sections *before* rendering, so a task text that contains a line
    `### user` cannot forge a message boundary.
    """

    def __init__(self, name: str, version: str, source: str) -> None:
        self.name, self.version, self.source = name, version, source
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False,
                                 keep_trailing_newline=True)
        env.filters["json"] = json_text
        markers = list(_ROLE_LINE.finditer(source))
        if not markers:
            raise ValueError(f"prompt {self.template_id}: no '### system' / '### user' section lines")
        prelude = env.from_string(source[: markers[0].start()]).render()
        if prelude.strip():
            raise ValueError(f"prompt {self.template_id}: text before the first section: {prelude[:60]!r}")
        self._sections: list[tuple[str, jinja2.Template]] = []
        for i, m in enumerate(markers):
            end = markers[i + 1].start() if i + 1 < len(markers) else len(source)
            self._sections.append((m.group(1), env.from_string(source[m.end() : end])))
        if self._sections[-1][0] != "user":
            raise ValueError(f"prompt {self.template_id}: the last section must be '### user'")

    @classmethod
    def load(cls, name: str = DEFAULT_TEMPLATE_NAME, version: str | None = None,
             directory: str | Path | None = None) -> PromptTemplate:
        """`prompts/<name>.<version>.jinja`; `version` None means `DEFAULT_TEMPLATE_VERSION`."""
        version = DEFAULT_TEMPLATE_VERSION if version is None else version
        if not (_NAME.fullmatch(name) and _NAME.fullmatch(version)):
            raise ValueError(f"bad prompt name/version {name!r}/{version!r}")
        path = Path(directory or PROMPTS_DIR) / f"{name}.{version}.jinja"
        if not path.is_file():
            raise FileNotFoundError(f"no prompt template {path}")
        return cls(name, version, path.read_text(encoding="utf-8"))

    @classmethod
    def default(cls) -> PromptTemplate:
        """The current NER prompt (`ner.v2`)."""
        return cls.load(DEFAULT_TEMPLATE_NAME, DEFAULT_TEMPLATE_VERSION)

    @property
    def template_id(self) -> str:
        """`ner.v1`: names the prompt in model versions."""
        return f"{self.name}.{self.version}"

    @property
    def content_hash(self) -> str:
        """First 12 hex digits of the source's sha256: an edited file never reuses old cache entries."""
        return hashlib.sha256(self.source.encode("utf-8")).hexdigest()[:12]

    @property
    def cache_id(self) -> str:
        return f"{self.template_id}@{self.content_hash}"

    def render(self, labels: Sequence[LabelSpec], demos: Sequence[Demo], query: str,
               domain: str | None = None) -> list[dict[str, str]]:
        """Chat messages. `demos` are shown in the given order: pass them most similar LAST."""
        context = {
            "labels": list(labels),
            "demos": [{"text": d.text, "output": d.output()} for d in demos],
            "query": query,
            "domain": domain,
        }
        messages = []
        for role, tmpl in self._sections:
            content = tmpl.render(**context).strip("\n")
            # Trailing spaces after the last "Output:" would only cost tokens; keep the query exact.
            messages.append({"role": role, "content": content if role == "user" else content.rstrip()})
        return messages
