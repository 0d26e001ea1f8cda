"""ground: every occurrence, word boundaries, unknown labels and ungrounded mentions dropped, longest wins."""

from __future__ import annotations

from backend.annotator.parsing import find_occurrences, ground
from backend.labeling_config import LabelSchema, LabelSpec
from training.spans import Span


def texts(text: str, spans: list[Span]) -> list[tuple[str, str]]:
    return [(text[s.start : s.end], s.label) for s in spans]


def test_every_occurrence_is_labelled(schema: LabelSchema) -> None:
    text = "Aspirin and aspirin: aspirin relieves pain."
    result = ground(text, [("aspirin", "Chemical")], schema)
    assert [(s.start, s.end) for s in result.spans] == [(12, 19), (21, 28)]  # exact case first
    assert all(s.label == "Chemical" for s in result.spans) and result.dropped == []


def test_mentions_not_in_the_text_are_dropped(schema: LabelSchema) -> None:
    result = ground("Cocaine causes seizures.", [("heroin", "Chemical"), ("seizures", "Disease")], schema)
    assert texts("Cocaine causes seizures.", result.spans) == [("seizures", "Disease")]
    assert result.dropped == [("heroin", "Chemical", "not in text")]


def test_unknown_labels_are_dropped_and_known_ones_mapped(schema: LabelSchema) -> None:
    text = "Cocaine causes seizures."
    pairs = [("Cocaine", "DRUG"), ("Cocaine", "a chemical or drug"), ("seizures", "disease")]
    result = ground(text, pairs, schema)
    assert texts(text, result.spans) == [("Cocaine", "Chemical"), ("seizures", "Disease")]
    assert result.dropped == [("Cocaine", "DRUG", "unknown type")]


def test_overlaps_keep_the_longest(schema: LabelSchema) -> None:
    text = "Patients with Parkinson's disease took L-dopa."
    pairs = [("Parkinson", "Disease"), ("Parkinson's disease", "Disease"), ("L-dopa", "Chemical")]
    result = ground(text, pairs, schema)
    assert texts(text, result.spans) == [("Parkinson's disease", "Disease"), ("L-dopa", "Chemical")]
    assert result.dropped == [("Parkinson", "Disease", "overlaps a longer span")]


def test_word_boundaries(schema: LabelSchema) -> None:
    text = "DAT binds DA; the DAT-DA complex"
    result = ground(text, [("DA", "Chemical")], schema)
    assert [(s.start, s.end) for s in result.spans] == [(10, 12), (22, 24)]  # never inside "DAT"
    assert ground("Cocaineism", [("Cocaine", "Chemical")], schema).dropped == [
        ("Cocaine", "Chemical", "not in text")]


def test_non_ascii_text(schema: LabelSchema) -> None:
    text = "5 µg of β-blocker caused hypotension in 2 patients (µg/kg)."
    result = ground(text, [("β-blocker", "Chemical"), ("hypotension", "Disease"), ("µg", "Chemical")], schema)
    assert texts(text, result.spans) == [("µg", "Chemical"), ("β-blocker", "Chemical"),
                                         ("hypotension", "Disease"), ("µg", "Chemical")]
    assert all(text[s.start : s.end] for s in result.spans)


def test_case_and_whitespace_fallback_only_without_exact_match(schema: LabelSchema) -> None:
    text = "Aspirin  overdose. Later, ASPIRIN again."
    result = ground(text, [("aspirin overdose", "Disease")], schema)
    assert texts(text, result.spans) == [("Aspirin  overdose", "Disease")]  # the text's own characters
    assert texts(text, ground(text, [("aspirin", "Chemical")], schema).spans) == [
        ("Aspirin", "Chemical"), ("ASPIRIN", "Chemical")]


def test_acronyms_are_matched_case_sensitively(schema: LabelSchema) -> None:
    # "PD" (Parkinson's disease) must not become the "pd" of another word, or "us" of "US".
    assert ground("the pd was high", [("PD", "Disease")], schema).spans == []
    assert find_occurrences("tell us about it", "US") == []


def test_unspaced_scripts_match_substrings() -> None:
    schema = LabelSchema("label", "text", "text", [LabelSpec("GPE", "place"), LabelSpec("ORG", "org")])
    text = "北京大学在北京"
    result = ground(text, [("北京大学", "ORG"), ("北京", "GPE")], schema)
    # The paper's converter let 北京 split 北京大学; here the longer ORG wins and the second 北京 is kept.
    assert texts(text, result.spans) == [("北京大学", "ORG"), ("北京", "GPE")]


def test_first_type_wins_for_the_same_text(schema: LabelSchema) -> None:
    result = ground("aspirin", [("aspirin", "Chemical"), ("aspirin", "Disease")], schema)
    assert texts("aspirin", result.spans) == [("aspirin", "Chemical")]
    assert result.dropped == [("aspirin", "Disease", "same text already given another type")]


def test_duplicates_blank_and_padded_mentions(schema: LabelSchema) -> None:
    result = ground("aspirin", [(" aspirin ", "Chemical"), ("aspirin", "Chemical"), ("  ", "Chemical")], schema)
    assert texts("aspirin", result.spans) == [("aspirin", "Chemical")]
    assert result.dropped == [("  ", "Chemical", "empty span")]


def test_empty_answer_grounds_to_nothing(schema: LabelSchema) -> None:
    result = ground("nothing here", [], schema)
    assert result.spans == [] and result.dropped == []
