"""Label Studio labeling configs: parse one into the label schema the annotator needs, or build one.

Only the first `<Labels>` control bound to a `<Text>` object matters (span NER). Each `<Label>`
gives a result value and a description that verbalizes it for the LLM.

Label Studio stores a label's `alias` (when it has one) in results instead of its `value`: the
frontend's `selectedValues()` is `alias ? alias : value`, and `LabelInterface` validates against the
same. So with `<Label value="person" alias="PER"/>` the result value is `PER` and `person` is the
natural name used as its description, the paper's "person (PER)" verbalization.
"""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from training.spans import Span


@dataclass(frozen=True)
class LabelSpec:
    """One entity type: the value stored in Label Studio results and its description for the LLM."""

    value: str
    description: str


# Background colours for generated configs, so labels are told apart in the Label Studio UI.
_PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
            "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075")


def _squash(s: str) -> str:
    return " ".join(s.split())


@dataclass
class LabelSchema:
    """The `<Labels>` control the annotator fills, the `<Text>` it points at, and its labels."""

    from_name: str
    to_name: str
    value_key: str
    labels: list[LabelSpec]
    config: str | None = field(default=None, repr=False, compare=False)

    @classmethod
    def plain(cls, labels: Sequence[str], descriptions: Mapping[str, str] | None = None) -> LabelSchema:
        """The schema of a generated config (`build_label_config`'s names) for bare label values, each
        described by `descriptions` or by its own name: for callers with no Label Studio project."""
        described = descriptions or {}
        return cls("label", "text", "text", [LabelSpec(lab, described.get(lab) or lab) for lab in labels])

    def __post_init__(self) -> None:
        if not self.labels:
            raise ValueError("a label schema needs at least one label")
        self.labels = list(self.labels)
        self._values = [lab.value for lab in self.labels]
        if len(set(self._values)) != len(self._values):
            raise ValueError(f"duplicate label values: {self._values}")
        self._interface: Any = None

    @property
    def values(self) -> list[str]:
        return list(self._values)

    @property
    def label_config(self) -> str:
        """The XML this schema came from, or an equivalent one built from it."""
        return self.config or build_label_config(self.labels, self.from_name, self.to_name, self.value_key)

    # ------------------------------------------------------------------ type mapping

    def _lookup(self, name: str) -> str | None:
        """Exact value, then case-insensitive value, then case-insensitive description (unambiguous)."""
        if name in self._values:
            return name
        folded = name.casefold()
        for attr in ("value", "description"):
            hits = {lab.value for lab in self.labels if _squash(getattr(lab, attr)).casefold() == folded}
            if len(hits) == 1:
                return hits.pop()
            if len(hits) > 1:
                return None  # ambiguous: refusing beats guessing
        return None

    def map_type(self, llm_type: object) -> str | None:
        """The label value an LLM's `type` means, or None when it names no label of this schema.

        Tolerated: other casing, the description instead of the value, `description (VALUE)` and
        `VALUE (description)` (the paper's verbalization), and `VALUE: description` (an echoed list line).
        """
        if not isinstance(llm_type, str):
            return None
        name = _squash(llm_type).strip("\"'`")
        if not name:
            return None
        found = self._lookup(name)
        if found is not None:
            return found
        paren = re.fullmatch(r"(.+?)\s*\(([^()]+)\)", name)
        if paren:
            for part in (paren.group(2), paren.group(1)):
                found = self._lookup(part.strip())
                if found is not None:
                    return found
        if ":" in name:
            return self._lookup(name.split(":", 1)[0].strip())
        return None

    # ------------------------------------------------------------------ Label Studio results

    def to_region(self, span: Span, text: str) -> dict[str, Any]:
        """A Label Studio result item for `span` (offsets checked against `text`)."""
        if not (0 <= span.start < span.end <= len(text)):
            raise ValueError(f"span [{span.start}, {span.end}) outside a text of length {len(text)}")
        if span.label not in self._values:
            raise ValueError(f"label {span.label!r} is not in the labeling config ({self._values})")
        # A stable id: the same region gets the same id across re-predictions.
        rid = hashlib.sha1(f"{span.start}:{span.end}:{span.label}".encode()).hexdigest()[:10]
        region: dict[str, Any] = {
            "id": rid,
            "from_name": self.from_name,
            "to_name": self.to_name,
            "type": "labels",
            "value": {"start": span.start, "end": span.end, "text": text[span.start : span.end],
                      "labels": [span.label]},
        }
        if span.score is not None:
            region["score"] = float(span.score)
        return region

    def validate_prediction(self, prediction: Mapping[str, Any], text: str | None = None) -> list[str]:
        """Errors in a prediction (`{"result": [...], "score"?, ...}`); an empty list means valid.

        The SDK's `LabelInterface.validate_prediction(p, return_errors=True)` (a list of strings in
        SDK 2.1.2) checks names, type, labels and score. It accepts an empty `labels` list and never
        looks at the text, so regions of our control are also checked here: a label is present, the
        offsets are ints inside the text, and `value.text == text[start:end]` (when `text` is given;
        otherwise at least `len(value.text) == end - start`).
        """
        from label_studio_sdk.label_interface import LabelInterface

        if self._interface is None:
            self._interface = LabelInterface(self.label_config)
        try:
            found = self._interface.validate_prediction(dict(prediction), return_errors=True)
            errors = [str(e) for e in found]
        except Exception as exc:  # noqa: BLE001 - an SDK crash is an invalid prediction, not ours to raise
            errors = [f"SDK validation failed: {type(exc).__name__}: {exc}"]
        result = prediction.get("result")
        if not isinstance(result, list):
            return errors
        for i, region in enumerate(result):
            if not isinstance(region, Mapping) or region.get("from_name") != self.from_name:
                continue
            value = region.get("value")
            if not isinstance(value, Mapping):
                continue
            if not value.get("labels"):
                errors.append(f"Region {i}: no label")
            start, end = value.get("start"), value.get("end")
            if not (type(start) is int and type(end) is int and 0 <= start < end):
                errors.append(f"Region {i}: offsets must be ints, 0 <= start < end; got {start!r}, {end!r}")
                continue
            region_text = value.get("text")
            if text is not None:
                if end > len(text):
                    errors.append(f"Region {i}: end {end} beyond the text (length {len(text)})")
                elif region_text != text[start:end]:
                    errors.append(f"Region {i}: value.text {region_text!r} != text[{start}:{end}] "
                                  f"{text[start:end]!r}")
            elif isinstance(region_text, str) and len(region_text) != end - start:
                errors.append(f"Region {i}: value.text has length {len(region_text)}, "
                              f"the offsets span {end - start}")
        return errors


# ---------------------------------------------------------------------- labels files


def load_label_descriptions(path: str | Path) -> dict[str, str]:
    """A labels file as `{value: description}`, in file order.

    Two formats: a JSON object `{"Chemical": "a chemical or drug ...", ...}`, or text lines
    `Chemical: a chemical or drug ...` (a bare `Chemical` line means no description; `#` comments).
    """
    path = Path(path)
    raw = path.read_text(encoding="utf-8")
    if raw.lstrip().startswith("{"):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ValueError(f"{path}: expected a JSON object of label -> description string")
        out = {str(k).strip(): _squash(v) for k, v in data.items()}
    else:
        out = {}
        for line in raw.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            value, _, description = line.partition(":")
            out[value.strip()] = _squash(description)
    if not out or "" in out:
        raise ValueError(f"{path}: no labels, or a label with an empty name")
    return out


def load_labels_file(path: str | Path) -> list[LabelSpec]:
    """A labels file (see `load_label_descriptions`) as label specs; no description → the value."""
    return [LabelSpec(v, d or v) for v, d in load_label_descriptions(path).items()]


# ---------------------------------------------------------------------- parse / build


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def parse_label_config(config: str, labels_file: str | Path | None = None) -> LabelSchema:
    """The schema of the first `<Labels>` bound to a `<Text>` in a Label Studio labeling config.

    A label's description is its `hint`, else its natural name when an `alias` is the result value,
    else the labels file's entry, else the value itself. Raises ValueError for a config that is not
    XML or has no usable `<Labels>`/`<Text>` pair.
    """
    if not isinstance(config, str):
        raise ValueError(f"a labeling config is an XML string, not {type(config).__name__}")
    try:
        root = ET.fromstring(config)
    except ET.ParseError as exc:
        raise ValueError(f"labeling config is not well-formed XML: {exc}") from exc
    texts = {el.get("name"): el for el in root.iter() if _local(el.tag) == "Text" and el.get("name")}
    if not texts:
        raise ValueError("labeling config has no <Text name=... value=\"$...\"> object to label")
    file_descriptions = load_label_descriptions(labels_file) if labels_file else {}
    for control in root.iter():
        if _local(control.tag) != "Labels":
            continue
        targets = [t.strip() for t in (control.get("toName") or "").split(",")]
        target = next((t for t in targets if t in texts), None)
        if target is None or not control.get("name"):
            continue
        value_attr = (texts[target].get("value") or "").strip()
        if not value_attr.startswith("$") or len(value_attr) < 2:
            raise ValueError(f"<Text name={target!r}> must take its text from a task field "
                             f"(value=\"$text\"), got value={value_attr!r}")
        labels: list[LabelSpec] = []
        for label in control.iter():
            if _local(label.tag) != "Label" or label.get("value") is None:
                continue
            natural = label.get("value") or ""
            stored = label.get("alias") or natural  # what Label Studio writes into results
            description = (
                _squash(label.get("hint") or "")
                or (_squash(natural) if stored != natural else "")
                or file_descriptions.get(stored) or file_descriptions.get(natural)
                or stored
            )
            labels.append(LabelSpec(stored, description))
        if not labels:
            raise ValueError(f"<Labels name={control.get('name')!r}> has no <Label value=...> children "
                             "(dynamic labels are not supported)")
        return LabelSchema(control.get("name") or "", target, value_attr[1:], labels, config=config)
    raise ValueError("labeling config has no <Labels> control bound (toName) to a <Text> object")


# The task data field the backend writes what the LLM did into ("LLM: 3 entities pre-labelled", "LLM failed:
# timeout (retrying)"); generated configs show it above the text, so an annotator can tell the two apart.
STATUS_KEY = "llm_status"
NOT_ASKED = "LLM: not asked yet"


def build_label_config(labels: Sequence[LabelSpec], from_name: str = "label", to_name: str = "text",
                       value_key: str = "text", status_key: str | None = STATUS_KEY) -> str:
    """A span-NER labeling config; descriptions become `hint`s so parsing it gives the same schema.

    With `status_key`, a `<Header>` shows that data field above the text. Label Studio prints "undefined"
    for a task without the field, so tasks imported for such a project carry it (`NOT_ASKED`).
    """
    if not labels:
        raise ValueError("no labels")
    values = [lab.value for lab in labels]
    if len(set(values)) != len(values) or any(not v.strip() for v in values):
        raise ValueError(f"label values must be unique and non-empty: {values}")
    lines = ["<View>"]
    if status_key:
        lines.append(f"  <Header value={quoteattr('$' + status_key)} size=\"6\"/>")
    lines.append(f"  <Labels name={quoteattr(from_name)} toName={quoteattr(to_name)}>")
    for i, lab in enumerate(labels):
        description = _squash(lab.description)
        # No hint when it would only repeat the value: parsing falls back to the value anyway.
        hint = f" hint={quoteattr(description)}" if description and description != lab.value else ""
        colour = _PALETTE[i % len(_PALETTE)]
        lines.append(f"    <Label value={quoteattr(lab.value)} background=\"{colour}\"{hint}/>")
    lines += ["  </Labels>", f"  <Text name={quoteattr(to_name)} value={quoteattr('$' + value_key)}/>",
              "</View>"]
    return "\n".join(lines) + "\n"
