"""`llmaaa extract`: run a trained student over a document collection and write its entities.

Pipeline, streamed document by document with a bounded buffer:
documents → passages (sentences, `llmaaa.documents`) → token windows (only for passages longer than the
student's window; consecutive windows overlap) → one batched, length-bucketed forward pass per buffer →
word marginals stitched back per passage (each word from the window where it has most context) → BIO
decoding over the whole passage, so an entity that crosses a window edge comes out once and whole →
optional LLM fallback for low-confidence passages → a writer (jsonl | conll | label-studio).

Offsets: a span is found in a passage, and `document[offset + start : offset + end]` is its text.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from llmaaa.documents import Document, Problem, SplitOptions, iter_documents, ref_id, split_passages
from training.spans import Span, spans_to_token_bio

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "conll", "label-studio")
EXPORT_INFO = "export_info.json"  # written by `llmaaa export-model` (llmaaa.export)


# ------------------------------------------------------------------------------------------ models
@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's weights are, the version name written into outputs, and its ModelStore version dir."""

    model_dir: Path
    version: str
    version_dir: Path | None = None


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; {} when it is missing, unreadable or not an object (optional metadata)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _resolve_dir(path: Path) -> ResolvedModel:
    from training.store import MANIFEST, MODEL_DIR

    if (path / MANIFEST).is_file() and (path / MODEL_DIR).is_dir():  # a ModelStore version directory
        return ResolvedModel(path / MODEL_DIR, str(read_json_object(path / MANIFEST).get("version") or path.name), path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is neither a model version directory (manifest.json + model/) nor a "
                                "Hugging Face checkpoint (config.json)")
    parent_manifest = path.parent / MANIFEST
    if path.name == MODEL_DIR and parent_manifest.is_file():  # the model/ folder inside a version
        version = str(read_json_object(parent_manifest).get("version") or path.parent.name)
        return ResolvedModel(path, version, path.parent)
    exported = read_json_object(path / EXPORT_INFO)  # an exported checkpoint keeps its source version's name
    return ResolvedModel(path, str(exported.get("source_version") or path.name))


# A version name is one path component of letters, digits, `.`, `_`, `-` (ModelStore's `v0003-…` and
# exported names fit): no `/`, `..` or glob characters can reach outside the data directory, and the
# length stays far below any file system's name limit.
VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_PROJECT_ID = 2**31 - 1  # Label Studio's ids are 32-bit integers


def check_project_id(project: object) -> int:
    """`project` as a Label Studio project id (a positive integer), or ValueError."""
    if isinstance(project, bool) or not isinstance(project, int) or not 1 <= project <= MAX_PROJECT_ID:
        raise ValueError(f"project id {project!r} is not a positive integer up to {MAX_PROJECT_ID}")
    return project


def check_version_name(name: str) -> str:
    """`name` if it can be a model version name (or `latest`), else ValueError."""
    if name != "latest" and not VERSION_NAME.match(name):
        shown = name if len(name) <= 80 else f"{name[:40]}…({len(name)} characters)"
        raise ValueError(f"{shown!r} is neither a directory nor a model version name (1-128 letters, digits, "
                         "'.', '_', '-', starting with a letter or digit), nor `latest`")
    return name


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # e.g. a name longer than the file system allows: certainly not a directory
        return False


def _latest_version(projects: Path, project: int) -> str:
    from training.store import ModelStore

    models = projects / str(project) / "models"
    # ModelStore creates its root: only open it when it exists, so a failed lookup leaves no trace.
    latest = ModelStore(models).latest() if models.is_dir() else None
    if latest is None:
        raise FileNotFoundError(f"project {project} has no model version in {models}")
    return latest


def resolve_model(spec: str | Path, data_dir: Path | None = None, project: int | None = None) -> ResolvedModel:
    """A model directory, or a version name looked up under `<data_dir>/projects/*/models/`.

    A directory may be a ModelStore version (`v0003-…/`), its `model/` folder, or an exported Hugging Face
    checkpoint. A version name found in more than one project is an error unless `project` picks one;
    `latest` needs `project`. A name that is not a valid version name (see `VERSION_NAME`) or a project id
    that is not a positive integer is a ValueError, and nothing is created on disk by a failed lookup.
    """
    if project is not None:
        check_project_id(project)
    path = Path(spec)
    if _is_dir(path):
        return _resolve_dir(path)
    name = check_version_name(str(spec))
    if data_dir is None:
        from backend.settings import get_settings

        data_dir = get_settings().llmaaa_data_dir
    projects = Path(data_dir) / "projects"
    if name == "latest":
        if project is None:
            raise ValueError("`latest` needs --project (which project's newest model?)")
        name = _latest_version(projects, project)
    pattern = f"{project}/models/{name}/manifest.json" if project is not None else f"*/models/{name}/manifest.json"
    hits = sorted(p.parent for p in projects.glob(pattern)) if projects.is_dir() else []
    # Defence in depth: the name cannot climb out, and a symlinked version may not lead out either.
    root = projects.resolve()
    for hit in hits:
        if not hit.resolve().is_relative_to(root):
            raise ValueError(f"model version {hit} resolves outside {root}; pass its directory instead")
    if len(hits) > 1:
        owners = ", ".join(h.parent.parent.name for h in hits)
        raise ValueError(f"model version {name!r} is ambiguous: it exists in projects {owners}; pass --project "
                         f"or the version directory")
    if not hits:
        known = sorted(p.parent.name for p in projects.glob("*/models/*/manifest.json"))[-10:] \
            if projects.is_dir() else []
        where = f"project {project} in {projects}" if project is not None else f"{projects}/*/models"
        raise FileNotFoundError(f"{spec!r} is not a directory and no model version of that name is in {where}"
                                + (f" (newest known: {', '.join(known)})" if known else ""))
    return _resolve_dir(hits[0])


def load_tagger(model_dir: Path) -> Any:
    """A `StudentTagger` from a saved tagger (labels.json) or any BIO token-classification checkpoint."""
    from training.model import LABELS_FILE, StudentTagger, _quiet_transformers

    if (model_dir / LABELS_FILE).is_file():
        return StudentTagger.load(model_dir)
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)  # no hub here
        model = AutoModelForTokenClassification.from_pretrained(model_dir, local_files_only=True)
    labels = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
    if "O" not in labels or any(lab != "O" and not lab.startswith(("B-", "I-")) for lab in labels):
        raise ValueError(f"{model_dir}: labels {labels} are not IOB2 (O, B-X, I-X)")
    limit = min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512,
                int(getattr(model.config, "max_position_embeddings", 512) or 512))
    return StudentTagger(model.eval(), tokenizer, labels, max_length=limit)


# ------------------------------------------------------------------------------------------ results
@dataclass
class PassageResult:
    """Spans of one passage, relative to the passage text; `source` is `student` or `llm`."""

    offset: int
    text: str
    spans: list[Span]
    confidence: float
    source: str
    model_version: str


@dataclass
class DocResult:
    doc: Document
    passages: list[PassageResult]

    def entities(self) -> Iterator[tuple[Span, PassageResult]]:
        """Document-level spans (offsets shifted by each passage's offset), in text order."""
        for p in self.passages:
            for s in sorted(p.spans):
                yield Span(s.start + p.offset, s.end + p.offset, s.label, s.score), p


# ------------------------------------------------------------------------------------------ writers
class Writer(Protocol):
    def write(self, result: DocResult) -> None: ...

    def close(self) -> None: ...


class JsonlWriter:
    """One JSON object per document: `doc_id`, `entities` [{start, end, text, label, confidence, source,
    model_version}], `n_passages`, `meta` (and the `text` itself with `include_text`)."""

    def __init__(self, fh: IO[str], include_text: bool = False) -> None:
        self.fh, self.include_text = fh, include_text

    def write(self, result: DocResult) -> None:
        text = result.doc.text
        entities = [{"start": s.start, "end": s.end, "text": text[s.start : s.end], "label": s.label,
                     "confidence": None if s.score is None else round(float(s.score), 6), "source": p.source,
                     "model_version": p.model_version}
                    for s, p in result.entities()]
        row: dict[str, Any] = {"doc_id": result.doc.doc_id, "entities": entities,
                               "n_passages": len(result.passages)}
        if result.doc.meta:
            row["meta"] = result.doc.meta
        if self.include_text:
            row["text"] = text
        self.fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    def close(self) -> None:
        pass


class ConllWriter:
    """Whitespace tokens with IOB2 tags: `token<TAB>start<TAB>end<TAB>tag` (document-level offsets, so the
    first and last columns read as classic CoNLL), a blank line after each passage, and comment lines
    `# doc_id = …` before each document and `# passage_offset = …` before each passage."""

    def __init__(self, fh: IO[str]) -> None:
        self.fh = fh

    def write(self, result: DocResult) -> None:
        from training.model import word_offsets

        lines = [f"# doc_id = {result.doc.doc_id}"]
        for p in result.passages:
            words = word_offsets(p.text)
            tags = spans_to_token_bio(words, p.spans)
            lines.append(f"# passage_offset = {p.offset}")
            for (a, b), tag in zip(words, tags, strict=True):
                lines.append(f"{p.text[a:b]}\t{a + p.offset}\t{b + p.offset}\t{tag}")
            lines.append("")
        self.fh.write("\n".join(lines) + "\n")

    def close(self) -> None:
        pass


class LabelStudioWriter:
    """A Label Studio import file with predictions: a JSON array of passage tasks
    `{"data": {text, doc_id, doc_offset, ref_id}, "predictions": [{model_version, score, result}]}`.

    Regions are relative to the task text (that is how Label Studio stores them); `doc_offset` maps them
    back. Tasks carry the same `ref_id`s as `llmaaa import-docs` with the same splitting options.
    """

    def __init__(self, fh: IO[str], entity_types: Sequence[str], from_name: str = "label",
                 to_name: str = "text") -> None:
        from backend.labeling_config import LabelSchema, LabelSpec

        self.fh = fh
        self.schema = LabelSchema(from_name, to_name, "text", [LabelSpec(t, t) for t in entity_types])  # LS names
        self.count = 0
        fh.write("[")

    def write(self, result: DocResult) -> None:
        doc = result.doc
        for p in result.passages:
            data: dict[str, Any] = {"text": p.text, "doc_id": doc.doc_id, "doc_offset": p.offset,
                                    "ref_id": ref_id(doc.doc_id, p.offset)}
            if doc.meta:
                data["doc_meta"] = doc.meta
            regions = [self.schema.to_region(s, p.text) for s in sorted(p.spans)]
            task = {"data": data, "predictions": [{"model_version": p.model_version,
                                                   "score": round(float(p.confidence), 6), "result": regions}]}
            self.fh.write((",\n" if self.count else "\n") + json.dumps(task, ensure_ascii=False))
            self.count += 1

    def close(self) -> None:
        self.fh.write("\n]\n" if self.count else "]\n")


def make_writer(fmt: str, fh: IO[str], entity_types: Sequence[str], include_text: bool = False) -> Writer:
    if fmt == "jsonl":
        return JsonlWriter(fh, include_text)
    if fmt == "conll":
        return ConllWriter(fh)
    if fmt == "label-studio":
        return LabelStudioWriter(fh, entity_types)
    raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")


@contextmanager
def open_output(path: str | Path) -> Iterator[IO[str]]:
    """`-` is stdout; a file is written under a temporary name and renamed when complete, so a crash or
    Ctrl-C never leaves a truncated file that looks finished."""
    if str(path) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            yield fh
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------ windows
def plan_windows(counts: Sequence[int], budget: int, overlap: int) -> list[tuple[int, int]]:
    """Word windows `[a, b)` whose subword counts sum to at most `budget` (a longer single word is a window
    alone); each window starts so that about `overlap` subwords of the previous one are seen again."""
    if budget < 1:
        raise ValueError("window budget must be positive")
    n, windows, a = len(counts), [], 0
    while True:
        total, b = 0, a
        while b < n and (b == a or total + counts[b] <= budget):
            total += counts[b]
            b += 1
        windows.append((a, b))
        if b >= n:
            return windows
        back, nxt = 0, b
        while nxt - 1 > a and back + counts[nxt - 1] <= overlap:
            nxt -= 1
            back += counts[nxt]
        a = nxt


def owned_ranges(windows: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The words each window decides: overlaps are split at their middle, so every word is taken from the
    window in which it has context on both sides. The ranges tile `[0, n_words)`."""
    cuts = [(nxt_a + b + 1) // 2 for (_, b), (nxt_a, _) in zip(windows, windows[1:], strict=False)]
    starts = [windows[0][0], *cuts]
    ends = [*cuts, windows[-1][1]]
    return list(zip(starts, ends, strict=True))


@dataclass
class _Passage:
    doc: int  # index into the buffer's documents
    offset: int
    text: str
    words: list[tuple[int, int]]
    windows: list[tuple[int, int]]  # word ranges
    owned: list[tuple[int, int]]
    first_text: int  # index of its first window text in the buffer


# ------------------------------------------------------------------------------------------ fallback
@dataclass
class LLMFallback:
    """Re-annotates passages whose student confidence is below `threshold` with the LLM annotator.

    A passage's confidence is its least confident word: the smallest top-tag probability over its words
    (a mean would let one unsure word hide in a long passage). A failed LLM call keeps the student's spans.
    """

    annotator: Any  # backend.annotator.LLMAnnotator
    threshold: float
    concurrency: int = 8
    stats: Counter[str] = field(default_factory=Counter)
    usd: float = 0.0

    def apply(self, passages: Sequence[PassageResult]) -> None:
        low = [p for p in passages if p.confidence < self.threshold]
        if not low:
            return
        outcomes = self.annotator.annotate_many([p.text for p in low], concurrency=self.concurrency,
                                                progress=False)
        counted: set[int] = set()
        for p, outcome in zip(low, outcomes, strict=True):
            self.stats["passages"] += 1
            if id(outcome) not in counted:  # identical texts share one outcome (asked once)
                counted.add(id(outcome))
                self.stats["calls"] += 1
                self.stats["cached"] += int(outcome.cached)
                self.stats["prompt_tokens"] += int(outcome.usage.get("prompt_tokens", 0) or 0)
                self.stats["completion_tokens"] += int(outcome.usage.get("completion_tokens", 0) or 0)
                self.usd += float(outcome.usage.get("usd", 0.0) or 0.0)
            if outcome.ok:
                self.stats["ok"] += 1
                p.spans, p.source, p.model_version = list(outcome.spans), "llm", self.annotator.model_version
            else:
                self.stats["failed"] += 1

    def report(self) -> dict[str, Any]:
        keys = ("passages", "calls", "ok", "failed", "cached", "prompt_tokens", "completion_tokens")
        return {"threshold": self.threshold, **{k: int(self.stats[k]) for k in keys}, "usd": round(self.usd, 6),
                "model_version": self.annotator.model_version}


def build_llm_fallback(entity_types: Sequence[str], threshold: float, labels_file: Path | None = None,
                       settings: Any = None, concurrency: int | None = None) -> LLMFallback:
    """The backend's annotator (client, reply cache, cost ledger in LLMAAA_DATA_DIR, the default prompt),
    zero-shot, for the student's entity types; descriptions come from a labels file when given."""
    from backend.composition import Services
    from backend.labeling_config import LabelSchema, load_label_descriptions

    services = Services(settings)
    s = services.settings
    described = load_label_descriptions(labels_file or s.labels_file) if (labels_file or s.labels_file) else {}
    annotator = services.annotator(LabelSchema.plain(entity_types, described))  # no demo index: zero-shot
    return LLMFallback(annotator, threshold, concurrency or s.llm_concurrency)


# ------------------------------------------------------------------------------------------ extraction
_LIBC: Any = None


def trim_native_heap() -> None:
    """Return freed native memory to the OS (glibc only; elsewhere a no-op).

    glibc keeps the buffers of freed tensors for reuse, and with ever-changing batch shapes the process's
    RSS crept up by ~150 MB over 600 abstracts although nothing was retained (Python allocations stayed
    flat); one `malloc_trim(0)` per buffer flush keeps RSS flat (measured: 528 MB throughout).
    """
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim  # noqa: B018 - probe: musl and macOS have no malloc_trim
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


@dataclass
class ExtractReport:
    documents: int = 0
    passages: int = 0
    windows: int = 0
    chunked_passages: int = 0
    entities: int = 0
    seconds: float = 0.0
    split_seconds: float = 0.0
    model_seconds: float = 0.0
    write_seconds: float = 0.0
    llm: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "problems"}
        for k in ("seconds", "split_seconds", "model_seconds", "write_seconds"):
            out[k] = round(out[k], 3)
        out["documents_per_s"] = round(self.documents / self.seconds, 2) if self.seconds else None
        out["passages_per_s"] = round(self.passages / self.seconds, 2) if self.seconds else None
        out["skipped"] = len(self.problems)
        return out


class Extractor:
    """Streams documents through the student (see the module docstring) into a writer."""

    def __init__(self, tagger: Any, version: str, batch_size: int = 32, split: SplitOptions | None = None,
                 overlap: int | None = None, buffer_passages: int = 1024, fallback: LLMFallback | None = None,
                 marginals: Callable[[Sequence[str]], list[np.ndarray]] | None = None) -> None:
        self.tagger, self.version = tagger, version
        self.batch_size, self.buffer_passages = batch_size, max(1, buffer_passages)
        self.split = split or SplitOptions(max_chars=None)
        specials = int(tagger.tokenizer.num_special_tokens_to_add(pair=False))
        # 2 subwords of slack: byte-level BPE may tokenise a window's first word one subword longer than
        # inside the passage (no leading space).
        self.budget = max(1, int(tagger.max_length) - specials - 2)
        self.overlap = max(0, self.budget // 4 if overlap is None else min(overlap, self.budget // 2))
        self.fallback = fallback
        self._marginals = marginals or self._student_marginals

    def _student_marginals(self, texts: Sequence[str]) -> list[np.ndarray]:
        # The stitching below needs word marginals, not spans; `pool_outputs` would also compute unused
        # embeddings.
        return self.tagger.word_marginals(list(texts), self.batch_size)

    def _subword_counts(self, text: str, words: Sequence[tuple[int, int]]) -> list[int]:
        from bisect import bisect_right

        enc = self.tagger.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ends = [b for _, b in words]
        counts = [0] * len(words)
        for a, b in enc["offset_mapping"]:
            if b > a:
                w = bisect_right(ends, a)
                if w < len(words):
                    counts[w] += 1
        return counts

    def _plan(self, doc_index: int, offset: int, text: str, first_text: int) -> _Passage:
        from training.model import word_offsets

        words = word_offsets(text)
        # Cheap bound first: a subword covers at least one byte (plus one marker piece per word for
        # SentencePiece), so most sentences need no extra tokenisation to know they fit.
        if len(text.encode("utf-8")) + len(words) <= self.budget:
            windows = [(0, len(words))]
        else:
            windows = plan_windows(self._subword_counts(text, words), self.budget, self.overlap)
        return _Passage(doc_index, offset, text, words, windows, owned_ranges(windows), first_text)

    def _window_texts(self, p: _Passage) -> list[str]:
        return [p.text[p.words[a][0] : p.words[b - 1][1]] for a, b in p.windows]

    def _decode(self, p: _Passage, margs: Sequence[np.ndarray]) -> PassageResult:
        n_labels = len(self.tagger.labels)
        if len(p.windows) == 1:
            rows = margs[0]
        else:
            rows = np.empty((len(p.words), n_labels), dtype=np.float32)
            for (a, _), (own_a, own_b), m in zip(p.windows, p.owned, margs, strict=True):
                rows[own_a:own_b] = m[own_a - a : own_b - a]
        spans = self.tagger.decode(p.text, rows)
        confidence = float(rows.max(axis=1).min()) if len(rows) else 1.0
        return PassageResult(p.offset, p.text, spans, confidence, "student", self.version)

    def run(self, documents: Iterable[Document], writer: Writer, progress: bool = True) -> ExtractReport:
        from tqdm import tqdm

        report = ExtractReport()
        started = time.perf_counter()
        batch = _Batch()
        bar = tqdm(unit="doc", desc="extract", disable=not progress, file=sys.stderr, mininterval=0.5)
        try:
            it = iter(documents)
            while True:
                t0 = time.perf_counter()
                doc = next(it, None)  # reading is counted as splitting: both are the pre-model overhead
                if doc is None:
                    break
                self._add(batch, doc, report)
                report.split_seconds += time.perf_counter() - t0
                if len(batch.passages) >= self.buffer_passages:
                    self._flush(batch, writer, report)
                    self._progress(bar, batch, report, started)
            if batch.docs:
                self._flush(batch, writer, report)
                self._progress(bar, batch, report, started)
            t0 = time.perf_counter()
            writer.close()
            report.write_seconds += time.perf_counter() - t0
        finally:
            bar.close()
        report.seconds = time.perf_counter() - started
        if self.fallback is not None:
            report.llm = self.fallback.report()
        return report

    def _add(self, batch: _Batch, doc: Document, report: ExtractReport) -> None:
        for start, end in split_passages(doc.text, self.split.max_chars, self.split.pack):
            p = self._plan(len(batch.docs), start, doc.text[start:end], len(batch.texts))
            batch.passages.append(p)
            batch.texts.extend(self._window_texts(p))
            report.passages += 1
            report.windows += len(p.windows)
            report.chunked_passages += int(len(p.windows) > 1)
        batch.docs.append(doc)

    def _flush(self, batch: _Batch, writer: Writer, report: ExtractReport) -> None:
        """Tag the buffered passages in one model pass (then the LLM fallback) and write their documents."""
        t0 = time.perf_counter()
        margs = self._marginals(batch.texts) if batch.texts else []
        t1 = time.perf_counter()
        results = [self._decode(p, margs[p.first_text : p.first_text + len(p.windows)]) for p in batch.passages]
        if self.fallback is not None:
            self.fallback.apply(results)
        t2 = time.perf_counter()
        by_doc: list[list[PassageResult]] = [[] for _ in batch.docs]
        for p, r in zip(batch.passages, results, strict=True):
            by_doc[p.doc].append(r)
        for doc, rs in zip(batch.docs, by_doc, strict=True):
            writer.write(DocResult(doc, rs))
            report.entities += sum(len(r.spans) for r in rs)
        report.model_seconds += t1 - t0
        report.write_seconds += time.perf_counter() - t2
        report.documents += len(batch.docs)
        batch.flushed = len(batch.docs)

    @staticmethod
    def _progress(bar: Any, batch: _Batch, report: ExtractReport, started: float) -> None:
        bar.update(batch.flushed)
        elapsed = time.perf_counter() - started
        bar.set_postfix(sent_per_s=f"{report.passages / elapsed:.0f}", entities=report.entities, refresh=False)
        batch.clear()
        trim_native_heap()


@dataclass
class _Batch:
    """Documents waiting for one model pass, their passages and the window texts the model reads."""

    docs: list[Document] = field(default_factory=list)
    passages: list[_Passage] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    flushed: int = 0

    def clear(self) -> None:
        self.docs.clear()
        self.passages.clear()
        self.texts.clear()


def extract_to_file(model: str | Path, input_path: str | Path, output: str | Path, fmt: str = "jsonl",
                    data_dir: Path | None = None, project: int | None = None, batch_size: int = 32,
                    split: SplitOptions | None = None, overlap: int | None = None, text_field: str = "text",
                    id_field: str = "id", fallback_threshold: float | None = None, labels_file: Path | None = None,
                    llm_concurrency: int | None = None, include_text: bool = False, progress: bool = True,
                    buffer_passages: int = 1024, on_problem: Callable[[Problem], None] | None = None
                    ) -> ExtractReport:
    """Everything `llmaaa extract` does: resolve and load the model, stream the input, write the output."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    if not Path(input_path).exists():
        raise FileNotFoundError(f"{input_path}: no such file or folder")
    resolved = resolve_model(model, data_dir, project)
    tagger = load_tagger(resolved.model_dir)
    fallback = None
    if fallback_threshold is not None:
        fallback = build_llm_fallback(tagger.entity_types, fallback_threshold, labels_file,
                                      concurrency=llm_concurrency)
    problems: list[str] = []

    def note(problem: Problem) -> None:
        problems.append(str(problem))
        (on_problem or (lambda p: log.warning("skipped %s", p)))(problem)

    extractor = Extractor(tagger, resolved.version, batch_size, split, overlap, buffer_passages, fallback)
    docs = iter_documents(input_path, text_field, id_field, note)
    with open_output(output) as fh:
        report = extractor.run(docs, make_writer(fmt, fh, tagger.entity_types, include_text), progress)
    report.problems = problems
    return report
