"""Document import: reading collections, sentence splitting, offsets, task building and idempotent import."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.setup_project import SetupReport
from llmaaa.cli import main
from llmaaa.documents import (
    Document,
    Problem,
    SplitOptions,
    TaskImporter,
    document_tasks,
    import_documents,
    iter_documents,
    sentence_spans,
    split_passages,
)
from tests.conftest import BC5CDR_LABELS, REPO
from tests.llmaaa.docs_support import FakeLabelStudio

# ------------------------------------------------------------------------------------------ splitting
BIOMEDICAL = [
    ("The rats were given cocaine (20 mg/kg i.p.) and e.g. saline as a control. No seizures occurred.",
     ["The rats were given cocaine (20 mg/kg i.p.) and e.g. saline as a control.", "No seizures occurred."]),
    ("The dose was 10 µg/kg (approx. 2 mg) given i.p. in mice vs. rats. Mean age was 56.3 yrs. "
     "Dr. Smith et al. reported it.",
     ["The dose was 10 µg/kg (approx. 2 mg) given i.p. in mice vs. rats.", "Mean age was 56.3 yrs.",
      "Dr. Smith et al. reported it."]),
    ("Treatment with α-tocopherol and β-blockers (i.e. propranolol) was started. Café-au-lait spots were seen.",
     ["Treatment with α-tocopherol and β-blockers (i.e. propranolol) was started.", "Café-au-lait spots were seen."]),
    ("The i.v. group had higher levels than the p.o. group. Both were safe.",
     ["The i.v. group had higher levels than the p.o. group.", "Both were safe."]),
    ("Levels rose (p < 0.05). The MIC was 2 ug/ml.", ["Levels rose (p < 0.05).", "The MIC was 2 ug/ml."]),
    ("Fluoxetine (Prozac; Eli Lilly & Co., Indianapolis, IN, U.S.A.) was used. Results: no change.",
     ["Fluoxetine (Prozac; Eli Lilly & Co., Indianapolis, IN, U.S.A.) was used.", "Results: no change."]),
    # pysbd alone cuts this into "... 5 mg/kg | i.v. | every 12 | h. Symptoms ...": our guard merges the
    # pieces back (a missed boundary is cheaper than a cut through an entity).
    ("Patients received 5 mg/kg i.v. every 12 h. Symptoms, e.g. nausea, were recorded. Fig. 2 shows it.",
     ["Patients received 5 mg/kg i.v. every 12 h. Symptoms, e.g. nausea, were recorded.", "Fig. 2 shows it."]),
    ("Asthma was observed. Cf. Table 1. The s.c. route was compared.",
     ["Asthma was observed.", "Cf. Table 1.", "The s.c. route was compared."]),
    # A title line, then a structured abstract; a hard-wrapped line continues its sentence.
    ("Aspirin and asthma\nBACKGROUND: Aspirin induces asthma in some patients who were\ntreated. It is common.",
     ["Aspirin and asthma", "BACKGROUND: Aspirin induces asthma in some patients who were\ntreated.",
      "It is common."]),
]


@pytest.mark.parametrize(("text", "expected"), BIOMEDICAL)
def test_biomedical_abbreviations_keep_sentences_whole(text: str, expected: list[str]) -> None:
    assert [text[a:b] for a, b in sentence_spans(text)] == expected


def _check_spans(text: str, spans: list[tuple[int, int]]) -> None:
    covered = [False] * len(text)
    prev_end = 0
    for a, b in spans:
        assert prev_end <= a < b <= len(text)
        assert not text[a].isspace() and not text[b - 1].isspace()
        for i in range(a, b):
            covered[i] = True
        prev_end = b
    lost = [c for c, cov in zip(text, covered, strict=True) if not cov and not c.isspace()]
    assert not lost, f"characters in no passage: {lost}"


_ALPHABET = st.sampled_from(list("abcXYZ αβµé.!?;()0123") + [" ", " ", "  ", "\n", "\r\n", "\t", "i.v. ", "e.g. ",
                                                           "Dr. ", "U.S. ", "\u00a0"])


@settings(max_examples=150, deadline=None)
@given(st.lists(_ALPHABET, max_size=120).map("".join), st.integers(min_value=3, max_value=40), st.booleans())
def test_passages_are_exact_slices_that_cover_every_character(text: str, max_chars: int, pack: bool) -> None:
    spans = sentence_spans(text)
    _check_spans(text, spans)
    passages = split_passages(text, max_chars, pack)
    _check_spans(text, passages)
    assert all(b - a <= max_chars for a, b in passages)


def test_long_lines_are_split_in_blocks_without_losing_text() -> None:
    text = ("Aspirin was given daily to patients with α-thalassemia " * 400).strip()  # 22k chars, no period
    spans = sentence_spans(text)
    assert spans == [(0, len(text))]  # block edges are not sentence boundaries
    many = " ".join(f"Sentence number {i} mentions µg doses." for i in range(600))
    spans = sentence_spans(many)
    assert len(spans) == 600 and all(many[a:b].startswith("Sentence number") for a, b in spans)


def test_max_chars_and_packing() -> None:
    text = "Aaa bbb ccc. Ddd eee fff. Ggg hhh."
    assert [text[a:b] for a, b in split_passages(text)] == ["Aaa bbb ccc.", "Ddd eee fff.", "Ggg hhh."]
    assert [text[a:b] for a, b in split_passages(text, max_chars=25, pack=True)] == ["Aaa bbb ccc. Ddd eee fff.",
                                                                                      "Ggg hhh."]
    assert [text[a:b] for a, b in split_passages(text, max_chars=7)] == ["Aaa bbb", "ccc.", "Ddd eee", "fff.",
                                                                          "Ggg", "hhh."]
    with pytest.raises(ValueError):
        split_passages(text, pack=True)


# ------------------------------------------------------------------------------------------ reading
@pytest.fixture()
def collection(tmp_path: Path) -> Path:
    root = tmp_path / "abstracts"
    (root / "nested").mkdir(parents=True)
    (root / "a.txt").write_bytes("\ufeffAspirin induces asthma. It is common.".encode())  # with a BOM
    (root / "nested" / "b.txt").write_text("Heparin and µ-opioid agonists (e.g. morphine) were given i.v.",
                                           encoding="utf-8")
    (root / "12345678").write_text("A PubMed-named file without suffix.", encoding="utf-8")
    (root / "latin1.txt").write_bytes("Caf\xe9 au lait.".encode("latin-1"))
    (root / "empty.txt").write_text("", encoding="utf-8")
    (root / "blank.txt").write_text("  \n\t\n", encoding="utf-8")
    (root / "figure.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (root / ".hidden.txt").write_text("never read", encoding="utf-8")
    (root / "array.json").write_text("[]", encoding="utf-8")
    lines = [json.dumps({"id": "pmid-1", "text": "Cocaine causes seizures.", "year": 2001}),
             "{not json",
             json.dumps({"id": "pmid-2", "title": "no text field"}),
             "",
             json.dumps({"id": "pmid-1", "text": "A duplicate id."}),
             json.dumps({"tokens": ["Naloxone", "reverses", "it", "."], "tags": ["B-Chemical", "O", "O", "O"]})]
    (root / "records.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "table.csv").write_text('id,text,journal\nc1,"Lithium, a drug.",J1\nc2,,J2\nc3,"Warfarin\nbleeding.",J3\n',
                                    encoding="utf-8")
    return root


def test_a_collection_imports_everything_readable_and_names_what_it_skips(collection: Path) -> None:
    problems: list[Problem] = []
    docs = list(iter_documents(collection, on_problem=problems.append))
    by_id = {d.doc_id: d for d in docs}
    assert set(by_id) == {"a", "nested/b", "12345678", "pmid-1", "records:6", "c1", "c3"}
    assert by_id["a"].text == "Aspirin induces asthma. It is common."  # BOM dropped
    assert by_id["pmid-1"].meta == {"year": 2001}
    assert by_id["records:6"].text == "Naloxone reverses it ."
    assert by_id["c3"].text == "Warfarin\nbleeding." and by_id["c3"].meta == {"journal": "J3"}
    reasons = {(Path(p.source.split(":")[0]).name, p.reason.split(" ")[0]) for p in problems}
    assert reasons == {("latin1.txt", "not"), ("empty.txt", "empty"), ("blank.txt", "empty"),
                       ("figure.png", "binary"), ("array.json", "a"), ("records.jsonl", "not"),
                       ("records.jsonl", "no"), ("records.jsonl", "duplicate"), ("table.csv", "empty")}
    assert any("latin1.txt" in str(p) and "UTF-8" in p.reason for p in problems)
    assert any(p.source.endswith("records.jsonl:2") for p in problems)  # the bad line is named


def test_csv_with_bad_bytes_keeps_the_rows_before(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"id,text\n1,Aspirin.\n2,Caf\xe9.\n")
    problems: list[Problem] = []
    docs = list(iter_documents(path, on_problem=problems.append))
    assert [d.doc_id for d in docs] == ["1"]
    assert len(problems) == 1 and "UTF-8" in problems[0].reason
    missing = tmp_path / "y.csv"
    missing.write_text("id,body\n1,x\n", encoding="utf-8")
    problems.clear()
    assert list(iter_documents(missing, on_problem=problems.append)) == []
    assert "no 'text' column" in problems[0].reason
    assert [d.text for d in iter_documents(missing, text_field="body")] == ["x"]


def test_csv_field_limit_is_raised_only_while_reading(tmp_path: Path) -> None:
    # Importing the module leaves csv's process-wide limit alone (a fresh interpreter shows it).
    code = "import csv; d = csv.field_size_limit(); import llmaaa.documents; print(d, csv.field_size_limit())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    default, after_import = proc.stdout.split()
    assert after_import == default == "131072", proc.stderr[-2000:]
    # Reading still accepts fields far beyond the default, and the limit is back between rows.
    path = tmp_path / "big.csv"
    big = "Aspirin " * 40_000  # 320 kB, over the 128 KiB default
    path.write_text(f"id,text\n1,{big}\n2,Short.\n", encoding="utf-8")
    docs = iter_documents(path)
    first = next(docs)
    assert first.text == big and csv.field_size_limit() == int(default)
    assert [d.doc_id for d in docs] == ["2"] and csv.field_size_limit() == int(default)


# ------------------------------------------------------------------------------------------ tasks
def test_tasks_are_slices_keyed_by_document_and_offset() -> None:
    doc = Document("pmid-9", "  Aspirin (ASA) 100 mg.\n\nIt caused asthma in 2/10 pts.  ", "x", {"year": 1999})
    tasks = list(document_tasks(doc))
    assert [t["text"] for t in tasks] == ["Aspirin (ASA) 100 mg.", "It caused asthma in 2/10 pts."]
    for t in tasks:
        assert doc.text[t["doc_offset"] : t["doc_offset"] + len(t["text"])] == t["text"]
        assert t["ref_id"] == f"pmid-9:{t['doc_offset']}" and t["doc_id"] == "pmid-9"
        assert t["doc_meta"] == {"year": 1999}
    assert list(document_tasks(doc)) == tasks  # deterministic: the same ref_ids every time
    packed = list(document_tasks(doc, SplitOptions(max_chars=100, pack=True)))
    assert len(packed) == 1 and packed[0]["ref_id"] == "pmid-9:2"


def test_importer_skips_known_ref_ids_and_batches() -> None:
    sent: list[list[dict[str, Any]]] = []
    tasks = [{"ref_id": f"d:{i}", "text": str(i)} for i in range(7)]
    counts = TaskImporter(["d:0", None], sent.append, batch=3).run(tasks + tasks[:2])
    assert (counts.imported, counts.skipped_existing) == (6, 3)
    assert [len(b) for b in sent] == [3, 3]


def test_reimporting_the_same_documents_leaves_the_task_count_unchanged(collection: Path) -> None:
    ls = FakeLabelStudio()
    first = import_documents(ls, 5, collection, batch=2)
    n = ls.count(5)
    assert first.imported == n > 5 and first.skipped_existing == 0
    assert ls.import_calls == math.ceil(n / 2)
    second = import_documents(ls, 5, collection, batch=2)
    assert (second.imported, second.skipped_existing) == (0, n)
    assert ls.count(5) == n
    refs = [t["ref_id"] for t in ls.rows[5]]
    assert len(set(refs)) == len(refs)
    (collection / "new.txt").write_text("Tamoxifen causes hot flashes. Rarely.", encoding="utf-8")
    third = import_documents(ls, 5, collection)
    assert (third.imported, third.skipped_existing) == (2, n)


# ------------------------------------------------------------------------------------------ CLI
def test_import_docs_cli_writes_a_label_studio_tasks_file(collection: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tasks.json"
    assert main(["import-docs", "--input", str(collection), "--out", str(out)]) == 0
    tasks = json.loads(out.read_text(encoding="utf-8"))
    assert tasks and all(set(t) == {"data"} for t in tasks)
    assert {"text", "doc_id", "doc_offset", "ref_id"} <= set(tasks[0]["data"])
    err = capsys.readouterr().err
    assert "latin1.txt" in err and "figure.png" in err and "empty.txt" in err
    assert main(["import-docs", "--input", str(tmp_path / "missing"), "--out", str(out)]) == 2


def test_setup_project_docs_imports_once(collection: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    import backend.labelstudio
    import backend.setup_project

    ls = FakeLabelStudio()
    monkeypatch.setattr(backend.labelstudio, "connect", lambda url, key: ls)
    monkeypatch.setattr(backend.setup_project, "setup_project",
                        lambda *a, **k: SetupReport(project_id=3, created_project=True, imported=0,
                                                    skipped_existing=0, ml_backend_id=None))
    argv = ["setup-project", "--title", "docs", "--labels", str(BC5CDR_LABELS), "--docs", str(collection)]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["docs_imported"] == ls.count(3) > 0
    assert any("latin1.txt" in p for p in first["docs_problems"])
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["docs_imported"] == 0 and second["docs_skipped_existing"] == first["docs_imported"]
    assert ls.count(3) == first["docs_imported"]


@pytest.mark.integration
def test_reimport_into_real_label_studio_adds_no_task(label_studio: Any, collection: Path) -> None:
    from backend.labelstudio import connect, iter_tasks
    from backend.settings import Settings
    from backend.setup_project import setup_project

    ls = connect(label_studio.url, label_studio.token)
    settings = Settings(label_studio_url=label_studio.url, label_studio_api_key=label_studio.token)
    report = setup_project(ls, settings, "it: documents", BC5CDR_LABELS, None, None, None)
    first = import_documents(ls, report.project_id, collection)
    tasks = list(iter_tasks(ls, report.project_id))
    assert first.imported == len(tasks) > 5
    second = import_documents(ls, report.project_id, collection)
    assert second.imported == 0 and second.skipped_existing == len(tasks)
    again = list(iter_tasks(ls, report.project_id))
    assert len(again) == len(tasks)
    for task in again:
        data = task["data"]
        assert data["ref_id"] == f"{data['doc_id']}:{data['doc_offset']}"
