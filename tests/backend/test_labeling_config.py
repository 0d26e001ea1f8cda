"""Labeling configs: parsing, verbalization, building, type mapping, result items and validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from label_studio_sdk.label_interface import LabelInterface

from backend.labeling_config import (
    LabelSchema,
    LabelSpec,
    build_label_config,
    load_labels_file,
    parse_label_config,
)
from training.spans import Span

CONFIG = """
<View>
  <Choices name="sentiment" toName="text"><Choice value="pos"/></Choices>
  <Image name="img" value="$image"/>
  <RectangleLabels name="boxes" toName="img"><Label value="Car"/></RectangleLabels>
  <Labels name="img_labels" toName="img"><Label value="Sky"/></Labels>
  <Labels name="ner" toName="text">
    <Label value="Chemical" hint="a chemical or drug" background="red"/>
    <Label value="person" alias="PER"/>
    <Label value="Disease"/>
    <Label value="Gene"/>
  </Labels>
  <Text name="text" value="$sentence"/>
</View>
"""


def test_parse_picks_the_labels_bound_to_a_text_and_verbalizes(tmp_path: Path) -> None:
    labels_file = tmp_path / "labels.json"
    labels_file.write_text(json.dumps({"Disease": "a disease or symptom", "Chemical": "ignored: hint wins"}))
    schema = parse_label_config(CONFIG, labels_file=labels_file)
    assert (schema.from_name, schema.to_name, schema.value_key) == ("ner", "text", "sentence")
    assert schema.labels == [
        LabelSpec("Chemical", "a chemical or drug"),  # hint
        LabelSpec("PER", "person"),  # alias: LS stores PER in results; "person" verbalizes it
        LabelSpec("Disease", "a disease or symptom"),  # labels file
        LabelSpec("Gene", "Gene"),  # nothing: the value itself
    ]
    assert schema.label_config == CONFIG


def test_labels_file_in_lines_format(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("# comment\nChemical: a drug, or a compound\n\nDisease\n", encoding="utf-8")
    config = build_label_config([LabelSpec("Chemical", "Chemical"), LabelSpec("Disease", "Disease")])
    schema = parse_label_config(config, labels_file=path)
    assert schema.labels == [LabelSpec("Chemical", "a drug, or a compound"), LabelSpec("Disease", "Disease")]
    assert load_labels_file(path) == schema.labels


def test_the_aliased_value_is_what_the_sdk_validates() -> None:
    schema = parse_label_config(CONFIG)
    region = schema.to_region(Span(0, 5, "PER"), "Alice met Bob")
    assert schema.validate_prediction({"result": [region]}, "Alice met Bob") == []
    assert LabelInterface(CONFIG).validate_prediction({"result": [region]}) is True


@pytest.mark.parametrize("config, message", [
    ("<View><Text name='t' value='$text'/></View>", "no <Labels>"),
    ("<View><Labels name='l' toName='t'><Label value='A'/></Labels></View>", "no <Text"),
    ("<View><Image name='i' value='$img'/><Labels name='l' toName='i'><Label value='A'/></Labels>"
     "<Text name='t' value='$text'/></View>", "no <Labels>"),
    ("<View><Labels name='l' toName='t'><Label value='A'/>", "not well-formed"),
    ("<View><Labels name='l' toName='t' value='$labels'/><Text name='t' value='$text'/></View>", "no <Label"),
    ("<View><Labels name='l' toName='t'><Label value='A'/></Labels><Text name='t' value='fixed'/></View>",
     "task field"),
])
def test_unusable_configs_raise_value_error(config: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_label_config(config)


def test_build_escapes_and_round_trips() -> None:
    labels = [LabelSpec("Chem & Co", 'a "drug" <b>\n or   compound'), LabelSpec("Disease", "Disease")]
    config = build_label_config(labels, from_name="lab", to_name="doc", value_key="body")
    LabelInterface(config).validate()  # Label Studio's own schema check
    schema = parse_label_config(config)
    assert (schema.from_name, schema.to_name, schema.value_key) == ("lab", "doc", "body")
    assert schema.labels == [LabelSpec("Chem & Co", 'a "drug" <b> or compound'), LabelSpec("Disease", "Disease")]
    assert "hint" not in config.splitlines()[4]  # no hint that only repeats the value
    assert config.splitlines()[1] == '  <Header value="$llm_status" size="6"/>'  # what the LLM did, above the text
    assert "Header" not in build_label_config(labels, status_key=None)
    with pytest.raises(ValueError):
        build_label_config([LabelSpec("A", "x"), LabelSpec("A", "y")])


@pytest.fixture
def schema() -> LabelSchema:
    return LabelSchema("label", "text", "text", [
        LabelSpec("PER", "person"), LabelSpec("LOC", "location"), LabelSpec("ORG", "organization"),
        LabelSpec("MISC", "miscellaneous entity"), LabelSpec("misc", "something else"),
    ])


@pytest.mark.parametrize("llm_type, expected", [
    ("PER", "PER"),
    ("per", "PER"),
    (" Person ", "PER"),
    ("location", "LOC"),
    ("LOCATION", "LOC"),
    ("person (PER)", "PER"),
    ("organization (ORG)", "ORG"),
    ("Organization(ORG)", "ORG"),
    ("LOC (location)", "LOC"),
    ("ORG: organization", "ORG"),
    ('"PER"', "PER"),
    ("MISC", "MISC"),  # exact beats the case-insensitive tie with "misc"
    ("Misc", None),  # ambiguous between MISC and misc: refused, not guessed
    ("GPE", None),
    ("", None),
    ("B-PER", None),
    (None, None),
    (3, None),
])
def test_map_type(schema: LabelSchema, llm_type: object, expected: str | None) -> None:
    assert schema.map_type(llm_type) == expected


def test_to_region_format(schema: LabelSchema) -> None:
    text = "Alice lives in Paris."
    region = schema.to_region(Span(15, 20, "LOC"), text)
    assert set(region) == {"id", "from_name", "to_name", "type", "value"}
    assert (region["from_name"], region["to_name"], region["type"]) == ("label", "text", "labels")
    assert region["value"] == {"start": 15, "end": 20, "text": "Paris", "labels": ["LOC"]}
    assert schema.to_region(Span(15, 20, "LOC", score=0.25), text)["score"] == 0.25
    assert region["id"] == schema.to_region(Span(15, 20, "LOC"), text)["id"]  # stable
    with pytest.raises(ValueError):
        schema.to_region(Span(15, 99, "LOC"), text)
    with pytest.raises(ValueError):
        schema.to_region(Span(0, 5, "GPE"), text)


def test_validate_prediction(schema: LabelSchema) -> None:
    text = "Alice lives in Paris."
    good = {"result": [schema.to_region(Span(0, 5, "PER"), text)], "score": 0.9, "model_version": "v"}
    assert schema.validate_prediction(good, text) == []

    def broken(**value: object) -> dict:
        region = schema.to_region(Span(0, 5, "PER"), text)
        region["value"] = {**region["value"], **value}
        return {"result": [region]}

    assert any("Invalid value" in e for e in schema.validate_prediction(broken(labels=["GPE"]), text))  # SDK
    assert any("no label" in e for e in schema.validate_prediction(broken(labels=[]), text))
    assert any("value.text" in e for e in schema.validate_prediction(broken(text="Alicia"), text))
    assert any("value.text" in e for e in schema.validate_prediction(broken(text="Ali")))  # no text: length
    assert any("beyond" in e for e in schema.validate_prediction(broken(end=50), text))
    assert any("offsets" in e for e in schema.validate_prediction(broken(start="0"), text))
    assert any("Score" in e for e in schema.validate_prediction({**good, "score": 7.0}, text))
    assert any("from_name" in e for e in schema.validate_prediction(
        {"result": [{**good["result"][0], "from_name": "nope"}]}, text))


def test_plain_schema_equals_the_parsed_generated_config() -> None:
    from backend.labeling_config import LabelSchema, LabelSpec, build_label_config, parse_label_config

    plain = LabelSchema.plain(["Chemical", "Disease"], {"Chemical": "a drug"})
    parsed = parse_label_config(build_label_config([LabelSpec("Chemical", "a drug"), LabelSpec("Disease", "Disease")]))
    assert (plain.from_name, plain.to_name, plain.value_key) == (parsed.from_name, parsed.to_name, parsed.value_key)
    assert plain.labels == parsed.labels
