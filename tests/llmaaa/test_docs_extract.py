"""`llmaaa extract`: offsets, chunking with overlap, streaming, output formats, model lookup, LLM fallback."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.annotator import CostLedger, LLMAnnotator, PromptTemplate
from backend.annotator.client import Completion, LLMCallError
from backend.labeling_config import LabelSchema, LabelSpec
from llmaaa.cli import main
from llmaaa.documents import Document, SplitOptions, document_tasks, iter_documents
from llmaaa.extract import (
    DocResult,
    Extractor,
    JsonlWriter,
    LLMFallback,
    make_writer,
    owned_ranges,
    plan_windows,
    resolve_model,
)
from tests.llmaaa.docs_support import TYPES, LexiconTagger, make_tiny_encoder, make_tiny_tagger
from training.store import ModelStore

LEXICON = {"congestive": ("B-Disease", 0.9), "heart": ("I-Disease", 0.9), "failure": ("I-Disease", 0.9),
           "α-tocopherol": ("B-Chemical", 0.95), "µ-opioid": ("B-Chemical", 0.95), "agonists": ("I-Chemical", 0.9),
           "café-au-lait": ("B-Disease", 0.8), "spots": ("I-Disease", 0.8), "β-blockers": ("B-Chemical", 0.9),
           "aspirin": ("B-Chemical", 0.99), "maybe": ("O", 0.4)}

UNICODE_DOCS = [
    Document("u1", "Treatment with α-tocopherol and β-blockers (i.e. propranolol) was started.  Café-au-lait spots "
                   "were seen in 3 pts.\r\nThe µ-opioid agonists were given at 10 µg/kg i.v. every day.", "x"),
    Document("u2", "\tCongestive heart failure (CHF) after aspirin:\n\nno change.  Aspirin again. " * 3, "x"),
]


def _run(tagger: Any, docs: list[Document], **kw: Any) -> tuple[list[dict[str, Any]], Any]:
    out = io.StringIO()
    report = Extractor(tagger, "v-test", **kw).run(docs, JsonlWriter(out), progress=False)
    return [json.loads(line) for line in out.getvalue().splitlines()], report


def _long_document() -> Document:
    """One 'sentence' of ~600 words with "congestive heart failure" every 7 words, so windows cut through some."""
    words = []
    for i in range(90):
        words += ["the", "patients", "developed", "congestive", "heart", "failure" if i % 2 else "failure,", "again"]
    return Document("long", " ".join(words), "x")


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))


# ------------------------------------------------------------------------------------------ windows
def test_windows_respect_the_budget_overlap_and_tile_the_words() -> None:
    counts = [1, 3, 2, 1, 1, 4, 1, 1, 2, 9, 1, 1]
    windows = plan_windows(counts, budget=6, overlap=2)
    for a, b in windows:
        assert b - a == 1 or sum(counts[a:b]) <= 6  # a single over-long word is a window alone
    assert windows[0][0] == 0 and windows[-1][1] == len(counts)
    for (a1, b1), (a2, _) in zip(windows, windows[1:], strict=False):
        assert a1 < a2 <= b1  # progress, and no gap between windows
    owned = owned_ranges(windows)
    assert [i for a, b in owned for i in range(a, b)] == list(range(len(counts)))
    for (a, b), (oa, ob) in zip(windows, owned, strict=True):
        assert a <= oa <= ob <= b
    assert plan_windows([2, 2], budget=10, overlap=3) == [(0, 2)]


def test_entities_across_window_edges_come_out_once_and_whole() -> None:
    doc = _long_document()
    whole, _ = _run(LexiconTagger(LEXICON), [doc])
    small = LexiconTagger(LEXICON, max_length=24)
    chunked, report = _run(small, [doc])
    assert report.chunked_passages == 1 and report.windows > 20
    expected = [(e["start"], e["end"], e["label"]) for e in whole[0]["entities"]]
    assert len(expected) == 90 and all(doc.text[a:b].startswith("congestive heart failure") for a, b, _ in expected)
    assert [(e["start"], e["end"], e["label"]) for e in chunked[0]["entities"]] == expected
    # The test means something only if windows do cut through mentions.
    extractor = Extractor(small, "v")
    plan = extractor._plan(0, 0, doc.text, 0)
    window_texts = extractor._window_texts(plan)
    cut = [t for t in window_texts if t.startswith(("heart", "failure")) or t.endswith(("congestive", "heart"))]
    assert cut, "no window edge falls inside a mention"


class EdgeBlindTagger(LexiconTagger):
    """Like a real transformer near a cut: blind (says O) for the `k` words next to a window edge that is
    not the passage's edge. Only a stitcher that takes each word from the window where it is far from the
    edges recovers every mention."""

    def __init__(self, windows: list[tuple[int, int]], n_words: int, k: int, **kw: Any) -> None:
        super().__init__(LEXICON, **kw)
        self.windows, self.n_words, self.k = windows, n_words, k

    def word_marginals(self, texts: Any, batch_size: int = 32) -> Any:
        margs = super().word_marginals(texts, batch_size)
        assert len(texts) == len(self.windows)
        for (a, b), rows in zip(self.windows, margs, strict=True):
            for j in range(b - a):
                if (a > 0 and j < self.k) or (b < self.n_words and j >= b - a - self.k):
                    rows[j] = self._row("blind")
        return margs


def test_each_word_comes_from_the_window_where_it_has_context() -> None:
    doc = _long_document()
    reference, _ = _run(LexiconTagger(LEXICON), [doc])
    planner = Extractor(LexiconTagger(LEXICON, max_length=40), "v", overlap=14)
    plan = planner._plan(0, 0, doc.text, 0)
    overlaps = [b1 - a2 for (_, b1), (a2, _) in zip(plan.windows, plan.windows[1:], strict=False)]
    assert len(plan.windows) > 10 and min(overlaps) >= 6
    blind = EdgeBlindTagger(plan.windows, len(plan.words), k=2, max_length=40)
    stitched, _ = _run(blind, [doc], overlap=14)
    assert stitched == reference


def test_offsets_round_trip_with_non_ascii_and_chunking(tiny_encoder: Path) -> None:
    tagger = make_tiny_tagger(tiny_encoder, max_length=16)  # tiny windows: most sentences are chunked
    rows, report = _run(tagger, UNICODE_DOCS, batch_size=4)
    assert report.chunked_passages >= 3
    texts = {d.doc_id: d.text for d in UNICODE_DOCS}
    n = 0
    for row in rows:
        text = texts[row["doc_id"]]
        prev_end = 0
        for e in row["entities"]:
            assert text[e["start"] : e["end"]] == e["text"]
            assert e["start"] >= prev_end and e["text"] == e["text"].strip() and e["text"]
            assert 0.0 < e["confidence"] <= 1.0 and e["model_version"] == "v-test" and e["label"] in TYPES
            prev_end = e["end"]
            n += 1
    assert n >= 10  # an untrained tagger tags plenty of words; an empty result would prove nothing
    assert any(any(ch in e["text"] for ch in "αβµé") for row in rows for e in row["entities"])


def test_buffering_does_not_change_the_output_and_bounds_the_batches() -> None:
    docs = [Document(f"d{i}", f"Aspirin number {i} caused congestive heart failure. Maybe not. " * (1 + i % 3), "x")
            for i in range(12)]
    big, _ = _run(LexiconTagger(LEXICON), docs)
    tagger = LexiconTagger(LEXICON)
    pulled: list[int] = []
    writes: list[int] = []

    def lazy() -> Iterator[Document]:
        for doc in docs:
            pulled.append(1)
            yield doc

    class Recorder(JsonlWriter):
        def write(self, result: DocResult) -> None:
            writes.append(len(pulled))
            super().write(result)

    out = io.StringIO()
    Extractor(tagger, "v-test", buffer_passages=3).run(lazy(), Recorder(out), progress=False)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == big
    assert writes[0] <= 2  # the first document is written long before the last one is read
    assert max(len(c) for c in tagger.calls) <= 3 + 5  # one buffer (3 passages) plus one document's passages


# ------------------------------------------------------------------------------------------ formats
def test_conll_and_label_studio_outputs(tiny_encoder: Path) -> None:
    tagger = make_tiny_tagger(tiny_encoder, max_length=32)
    split = SplitOptions(max_chars=1000)
    texts = {d.doc_id: d.text for d in UNICODE_DOCS}

    conll = io.StringIO()
    Extractor(tagger, "v-test", split=split).run(UNICODE_DOCS, make_writer("conll", conll, TYPES), progress=False)
    tags = 0
    doc_id = None
    for line in conll.getvalue().splitlines():
        if line.startswith("# doc_id = "):
            doc_id = line.split(" = ", 1)[1]
        elif line and not line.startswith("#"):
            token, start, end, tag = line.split("\t")
            assert texts[doc_id][int(start) : int(end)] == token and tag[:2] in ("O", "B-", "I-")
            tags += tag != "O"
    assert tags > 5

    ls_out = io.StringIO()
    writer = make_writer("label-studio", ls_out, TYPES)
    Extractor(tagger, "v-test", split=split).run(UNICODE_DOCS, writer, progress=False)
    tasks = json.loads(ls_out.getvalue())
    schema = LabelSchema("label", "text", "text", [LabelSpec(t, t) for t in TYPES])
    imported = [t for d in UNICODE_DOCS for t in document_tasks(d, split)]
    assert [t["data"]["ref_id"] for t in tasks] == [t["ref_id"] for t in imported]  # same tasks as import-docs
    regions = 0
    for task in tasks:
        data, (pred,) = task["data"], task["predictions"]
        assert texts[data["doc_id"]][data["doc_offset"] : data["doc_offset"] + len(data["text"])] == data["text"]
        assert schema.validate_prediction(pred, text=data["text"]) == []
        assert pred["model_version"] == "v-test" and 0 <= pred["score"] <= 1
        regions += len(pred["result"])
    assert regions > 5


# ------------------------------------------------------------------------------------------ models
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> Path:
    root = tmp_path_factory.mktemp("llmaaa-data")
    tagger = make_tiny_tagger(tiny_encoder, max_length=32)
    store = ModelStore(root / "projects" / "1" / "models")
    store.save(tagger, {"dev_f1": 0.5}, {}, {"project": 1})
    store.save(tagger, {"dev_f1": 0.6}, {}, {"project": 1})
    return root


def test_model_lookup_by_directory_name_and_project(data_dir: Path) -> None:
    versions = ModelStore(data_dir / "projects" / "1" / "models").versions()
    old, new = versions
    vdir = data_dir / "projects" / "1" / "models" / old
    assert resolve_model(vdir).version == old and resolve_model(vdir).model_dir == vdir / "model"
    assert resolve_model(vdir / "model").version == old
    assert resolve_model(old, data_dir).version_dir == vdir
    assert resolve_model("latest", data_dir, project=1).version == new
    with pytest.raises(ValueError, match="--project"):
        resolve_model("latest", data_dir)
    with pytest.raises(FileNotFoundError, match="v9999"):
        resolve_model("v9999-20990101T000000Z", data_dir)
    twin = data_dir / "projects" / "2" / "models" / old
    shutil.copytree(vdir, twin)
    try:
        with pytest.raises(ValueError, match="ambiguous.*1, 2"):
            resolve_model(old, data_dir)
        assert resolve_model(old, data_dir, project=2).version_dir == twin
    finally:
        shutil.rmtree(twin.parent.parent)
    with pytest.raises(FileNotFoundError, match="neither"):
        resolve_model(data_dir)


def test_version_names_cannot_reach_outside_the_data_dir(data_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # A complete model version beside (not inside) the data directory, reachable by `..` from the glob.
    vdir = data_dir / "projects" / "1" / "models" / ModelStore(data_dir / "projects" / "1" / "models").latest()
    outside = data_dir.parent / "outside" / "vX"
    shutil.copytree(vdir, outside, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)  # so the relative spec is not a directory from the working directory
    try:
        specs = ("../../../../outside/vX", "../../../outside/vX", "*/../../../outside/vX", "v*", "/no/such/vX")
        for spec in specs:
            with pytest.raises(ValueError, match="version name"):
                resolve_model(spec, data_dir)
        # A symlinked version that leads out of the data directory is refused too.
        link = data_dir / "projects" / "3" / "models" / "vlink"
        link.parent.mkdir(parents=True)
        link.symlink_to(outside, target_is_directory=True)
        with pytest.raises(ValueError, match="outside"):
            resolve_model("vlink", data_dir)
    finally:
        shutil.rmtree(data_dir / "projects" / "3", ignore_errors=True)
        shutil.rmtree(outside.parent)


def test_overlong_names_and_bad_projects_are_clear_errors_without_side_effects(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    before = sorted(p.relative_to(data_dir) for p in data_dir.rglob("*"))
    with pytest.raises(ValueError, match="5000 characters"):
        resolve_model("v" * 5000, data_dir)
    for bad in (-1, 0, True, 2**31, 10**300):
        with pytest.raises(ValueError, match="project id"):
            resolve_model("latest", data_dir, project=bad)
    with pytest.raises(FileNotFoundError, match="project 7 has no model"):
        resolve_model("latest", data_dir, project=7)
    assert sorted(p.relative_to(data_dir) for p in data_dir.rglob("*")) == before  # no projects/-1, /7, /True

    monkeypatch.setenv("LLMAAA_DATA_DIR", str(data_dir))
    from backend.settings import get_settings

    get_settings.cache_clear()
    inp = tmp_path / "in.txt"
    inp.write_text("Aspirin .", encoding="utf-8")
    try:
        assert main(["extract", "--model", "a" * 5000, "--input", str(inp), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert "error:" in err and "version name" in err and "Traceback" not in err and len(err) < 1000
        with pytest.raises(SystemExit) as exit_info:  # argparse rejects it before anything runs
            main(["extract", "--model", "latest", "--project", "-1", "--input", str(inp), "--out", "-"])
        assert exit_info.value.code == 2 and "project id" in capsys.readouterr().err
    finally:
        get_settings.cache_clear()
    assert sorted(p.relative_to(data_dir) for p in data_dir.rglob("*")) == before
    assert not (tmp_path / "o").exists()


def test_extract_cli_end_to_end(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LLMAAA_DATA_DIR", str(data_dir))
    from backend.settings import get_settings

    get_settings.cache_clear()
    inp = tmp_path / "in"
    inp.mkdir()
    for d in UNICODE_DOCS:
        (inp / f"{d.doc_id}.txt").write_text(d.text, encoding="utf-8", newline="")
    (inp / "bad.txt").write_bytes(b"\xff\xfe\x00b\x00a\x00d")
    latest = ModelStore(data_dir / "projects" / "1" / "models").latest()
    for fmt in ("jsonl", "conll", "label-studio"):
        out = tmp_path / f"out.{fmt}"
        code = main(["extract", "--model", str(latest), "--input", str(inp), "--out", str(out), "--format", fmt,
                     "--no-progress"])
        captured = capsys.readouterr()
        assert code == 0 and out.exists()
        assert "bad.txt" in captured.err
        summary = json.loads(captured.out)
        assert summary["documents"] == 2 and summary["skipped"] == 1
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    docs = {d.doc_id: d.text for d in iter_documents(inp, on_problem=lambda p: None)}
    assert {r["doc_id"] for r in rows} == set(docs)
    for r in rows:
        for e in r["entities"]:
            assert docs[r["doc_id"]][e["start"] : e["end"]] == e["text"] and e["model_version"] == latest
    assert not list(tmp_path.glob(".out*"))  # no temporary file left behind
    assert main(["extract", "--model", "nope", "--input", str(inp), "--out", str(tmp_path / "x")]) == 2
    get_settings.cache_clear()


# ------------------------------------------------------------------------------------------ LLM fallback
class FakeChat:
    """An OpenAI-compatible chat client stand-in: answers each `aspirin` as a Chemical; fails on `timeout`."""

    model = "gpt-4o-mini"

    def __init__(self) -> None:
        self.queries: list[str] = []

    def complete(self, messages: list[dict[str, str]], json_schema: Any = None, sampling: Any = None) -> Completion:
        query = messages[-1]["content"].rsplit("Input: ", 1)[1].split("\nOutput:", 1)[0]
        self.queries.append(query)
        if "timeout" in query:
            raise LLMCallError("timeout", "no answer within 30 s", attempts=2)
        ents = [{"span": w.strip(".,"), "type": "Chemical"} for w in query.split() if w.lower().startswith("aspirin")]
        return Completion(json.dumps({"entities": ents}), prompt_tokens=1000, completion_tokens=100,
                          model=self.model, latency_s=0.01)


def test_llm_fallback_only_for_unsure_passages_and_reports_the_cost(tmp_path: Path) -> None:
    docs = [Document("a", "Aspirin helps. Maybe aspirin harms. Congestive heart failure.", "x"),
            Document("b", "Maybe it is a timeout. Aspirin is fine.", "x")]
    chat = FakeChat()
    ledger = CostLedger(tmp_path / "costs.jsonl", prices={"gpt-4o-mini": [0.001, 0.002]}, use_env=False)
    schema = LabelSchema("label", "text", "text", [LabelSpec(t, t) for t in TYPES])
    annotator = LLMAnnotator(chat, schema, PromptTemplate.load("ner", "v1"), ledger=ledger)
    fallback = LLMFallback(annotator, threshold=0.5, concurrency=2)
    rows, report = _run(LexiconTagger(LEXICON), docs, fallback=fallback)
    assert sorted(chat.queries) == ["Maybe aspirin harms.", "Maybe it is a timeout."]  # only the unsure ones
    ents = {(r["doc_id"], e["text"]): e for r in rows for e in r["entities"]}
    assert ents[("a", "aspirin")]["source"] == "llm" and ents[("a", "aspirin")]["confidence"] is None
    assert ents[("a", "aspirin")]["model_version"] == annotator.model_version
    assert ents[("a", "Aspirin")]["source"] == "student"
    for r in rows:
        text = next(d.text for d in docs if d.doc_id == r["doc_id"])
        assert all(text[e["start"] : e["end"]] == e["text"] for e in r["entities"])
    llm = report.llm
    assert (llm["passages"], llm["calls"], llm["ok"], llm["failed"]) == (2, 2, 1, 1)
    assert llm["prompt_tokens"] == 1000 and llm["usd"] == pytest.approx(1000 / 1000 * 0.001 + 100 / 1000 * 0.002)
    assert ledger.summary()["gpt-4o-mini"]["usd"] == pytest.approx(llm["usd"])
