"""Raw document collections: read them (a folder of .txt files, JSONL, CSV), split them into passages, and turn
the passages into Label Studio tasks that remember where they came from.

Every passage is a slice of its document: `document.text[offset : offset + len(passage)]` is the passage,
so spans found in a passage map back to the document by adding `offset`. Task `ref_id`s are
`f"{doc_id}:{offset}"`, which makes re-importing the same documents (with the same splitting options) add
nothing.

Sentence splitting is pysbd (rule-based, ships its abbreviation lists, no model download) with two
guards of our own, both only ever *removing* a pysbd boundary (see `sentence_spans` and docs/documents.md).

Everything streams: documents are yielded one at a time and no function holds a whole collection.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

UNSUPPORTED_SUFFIXES = {".json": "a JSON array is not streamed: write one JSON object per line (.jsonl)"}
DEFAULT_MAX_DOC_BYTES = 20_000_000  # one document is held whole; bigger files are reported, not read
_SNIFF_BYTES = 8192
# pysbd's regexes are superlinear on long inputs (95k chars took 4.5 s, 25k chars 0.36 s), so it gets
# blocks of at most this many characters; a block edge is only a candidate boundary (see `sentence_spans`).
_BLOCK_CHARS = 5000
_TERMINAL = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*$")
_LAST_SENTENCE_END = re.compile(r"[.!?]\s")
_NO_SPACE = re.compile(r"\S+")


# ------------------------------------------------------------------------------------------ documents
@dataclass
class Document:
    """One raw document. `source` names where it came from (file, and line or row) for messages."""

    doc_id: str
    text: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    """A file or record that was skipped, and why."""

    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


ProblemSink = Callable[[Problem], None]


def _log_problem(problem: Problem) -> None:
    log.warning("skipped %s", problem)


def _is_binary(head: bytes) -> bool:
    # Text files never contain NUL bytes (UTF-16 would, and is not supported either).
    return b"\x00" in head


def _decode_error(exc: UnicodeDecodeError) -> str:
    return (f"not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "re-save the file as UTF-8")


def _read_text_file(path: Path, max_bytes: int) -> str | Problem:
    """The whole file as text, or the reason it cannot be a document."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return Problem(str(path), f"too large for one document ({size} bytes > {max_bytes})")
        raw = path.read_bytes()
    except OSError as exc:
        return Problem(str(path), f"unreadable ({exc.strerror or exc})")
    if _is_binary(raw[:_SNIFF_BYTES]):
        return Problem(str(path), "binary file (contains NUL bytes)")
    try:
        text = raw.decode("utf-8-sig")  # a BOM is not part of the text
    except UnicodeDecodeError as exc:
        return Problem(str(path), _decode_error(exc))
    if not text.strip():
        return Problem(str(path), "empty")
    return text


def _record_text(row: Mapping[str, Any], text_field: str) -> str | None:
    value = row.get(text_field)
    if isinstance(value, str):
        return value
    tokens = row.get("tokens")  # ../shared/data style: tokens joined by one space, as everywhere else
    if value is None and isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
        return " ".join(tokens)
    return None


_csv_limit_lock = threading.Lock()


@contextmanager
def _large_csv_fields() -> Iterator[None]:
    """csv's field limit (process-wide, 128 KiB by default) raised for one read, then restored.

    Abstracts and full texts exceed the default, but the limit is global state of every csv user in the
    process, so it is raised only around our own reads (under a lock, as two readers may interleave).
    """
    with _csv_limit_lock:
        limit = sys.maxsize
        while True:
            try:
                previous = csv.field_size_limit(limit)
                break
            except OverflowError:  # a C long narrower than sys.maxsize (Windows)
                limit //= 10
        try:
            yield
        finally:
            csv.field_size_limit(previous)


def _csv_rows(reader: csv.DictReader[str]) -> Iterator[dict[str, Any]]:
    while True:
        with _large_csv_fields():
            row = next(reader, None)
        if row is None:
            return
        yield row


class _DocumentReader:
    """Yields the documents of one path; reports every skipped file or record to `report`."""

    def __init__(self, text_field: str, id_field: str, report: ProblemSink, max_doc_bytes: int) -> None:
        self.text_field, self.id_field = text_field, id_field
        self.report, self.max_doc_bytes = report, max_doc_bytes
        self._seen_ids: set[str] = set()  # ids only (not texts): O(collection) small strings

    def _accept(self, doc: Document) -> bool:
        if doc.doc_id in self._seen_ids:
            # Two documents with one id would share ref_ids, and the second would silently vanish on import.
            self.report(Problem(doc.source, f"duplicate document id {doc.doc_id!r}"))
            return False
        self._seen_ids.add(doc.doc_id)
        return True

    def read(self, path: Path) -> Iterator[Document]:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                rel = file.relative_to(path)
                if any(part.startswith(".") for part in rel.parts):
                    continue  # hidden files and folders (.DS_Store, .git)
                yield from self._read_file(file, rel.as_posix())
        elif path.is_file():
            yield from self._read_file(path, path.name)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")

    def _read_file(self, file: Path, rel: str) -> Iterator[Document]:
        suffix = file.suffix.lower()
        if suffix in UNSUPPORTED_SUFFIXES:
            self.report(Problem(str(file), UNSUPPORTED_SUFFIXES[suffix]))
            return
        if suffix in (".jsonl", ".ndjson"):
            yield from self._read_jsonl(file, rel)
        elif suffix in (".csv", ".tsv"):
            yield from self._read_csv(file, rel, "\t" if suffix == ".tsv" else ",")
        else:
            # Any other file is one plain-text document (PMID-named files often have no suffix); binary
            # and non-UTF-8 files are caught by content, not by name.
            text = _read_text_file(file, self.max_doc_bytes)
            if isinstance(text, Problem):
                self.report(text)
                return
            doc_id = rel[: -len(file.suffix)] if suffix == ".txt" else rel
            doc = Document(doc_id, text, str(file))
            if self._accept(doc):
                yield doc

    def _record(self, row: Any, source: str, default_id: str) -> Document | None:
        if not isinstance(row, Mapping):
            self.report(Problem(source, "not a JSON object"))
            return None
        text = _record_text(row, self.text_field)
        if text is None:
            self.report(Problem(source, f"no {self.text_field!r} text field (fields: {sorted(row)[:10]})"))
            return None
        if not text.strip():
            self.report(Problem(source, "empty text"))
            return None
        raw_id = row.get(self.id_field)
        doc_id = str(raw_id).strip() if raw_id not in (None, "") else default_id
        meta = {k: v for k, v in row.items() if k not in (self.text_field, self.id_field, "tokens", "tags")}
        return Document(doc_id, text, source, meta)

    def _open_text(self, file: Path) -> BinaryIO | None:
        """Open for reading bytes, or report why not (unreadable, binary) and return None."""
        try:
            fh = file.open("rb")
        except OSError as exc:
            self.report(Problem(str(file), f"unreadable ({exc.strerror or exc})"))
            return None
        if _is_binary(fh.read(_SNIFF_BYTES)):
            fh.close()
            self.report(Problem(str(file), "binary file (contains NUL bytes)"))
            return None
        fh.seek(0)
        return fh

    def _read_jsonl(self, file: Path, rel: str) -> Iterator[Document]:
        stem = rel.rsplit(".", 1)[0]
        fh = self._open_text(file)
        if fh is None:
            return
        with fh:
            nonblank = 0
            for lineno, raw in enumerate(fh, start=1):
                source = f"{file}:{lineno}"
                if not raw.strip():
                    continue
                nonblank += 1
                try:
                    row = json.loads(raw.decode("utf-8-sig" if lineno == 1 else "utf-8"))
                except UnicodeDecodeError as exc:
                    self.report(Problem(source, _decode_error(exc)))
                    continue
                except json.JSONDecodeError as exc:
                    self.report(Problem(source, f"not JSON ({exc.msg})"))
                    continue
                doc = self._record(row, source, f"{stem}:{lineno}")
                if doc is not None and self._accept(doc):
                    yield doc
            if nonblank == 0:
                self.report(Problem(str(file), "empty"))

    def _read_csv(self, file: Path, rel: str, delimiter: str) -> Iterator[Document]:
        stem = rel.rsplit(".", 1)[0]
        fh = self._open_text(file)
        if fh is None:
            return
        with fh:
            # Decoded line by line (not by the text layer's 8 KiB chunks), so the rows before a bad byte
            # still import and the error names its line.
            lines = (raw.decode("utf-8-sig" if i == 0 else "utf-8") for i, raw in enumerate(fh))
            reader = csv.DictReader(lines, delimiter=delimiter)
            try:
                with _large_csv_fields():
                    columns = reader.fieldnames
                if not columns:
                    self.report(Problem(str(file), "empty"))
                    return
                if self.text_field not in columns:
                    self.report(Problem(str(file), f"no {self.text_field!r} column (columns: {columns[:10]})"))
                    return
                for row_no, row in enumerate(_csv_rows(reader), start=2):  # row 1 is the header
                    doc = self._record(row, f"{file}:{reader.line_num}", f"{stem}:{row_no}")
                    if doc is not None and self._accept(doc):
                        yield doc
            except UnicodeDecodeError as exc:
                # A CSV record can span lines, so there is no safe place to resume: the rest is skipped.
                self.report(Problem(f"{file}:{reader.line_num + 1}",
                                    _decode_error(exc) + "; the rest of the file skipped"))
            except csv.Error as exc:
                self.report(Problem(f"{file}:{reader.line_num}", f"bad CSV ({exc}); the rest of the file skipped"))


def iter_documents(
    path: str | Path,
    text_field: str = "text",
    id_field: str = "id",
    on_problem: ProblemSink | None = None,
    max_doc_bytes: int = DEFAULT_MAX_DOC_BYTES,
) -> Iterator[Document]:
    """Documents of a folder (recursively), a `.jsonl`, a `.csv`/`.tsv` or a single text file, lazily.

    - a text file (`.txt` or anything not structured) is one document; its id is its path relative to the
      folder, without `.txt`;
    - a JSONL line is one document: `text_field` (or `tokens`, joined by spaces), `id_field` as the id
      (default `<file>:<line>`), the other fields as metadata; a CSV/TSV row likewise (default id
      `<file>:<row>`).

    Files that are binary, not UTF-8, empty or unreadable, bad records and duplicate ids are passed to
    `on_problem` (default: a warning in the log) and skipped; everything else is still read.
    """
    reader = _DocumentReader(text_field, id_field, on_problem or _log_problem, max_doc_bytes)
    yield from reader.read(Path(path))


# ------------------------------------------------------------------------------------------ splitting
_segmenter_local = threading.local()


def _segmenter() -> Any:
    seg = getattr(_segmenter_local, "segmenter", None)
    if seg is None:
        import pysbd

        # clean=False keeps the text as it is (offsets matter); the object is reused per thread.
        seg = _segmenter_local.segmenter = pysbd.Segmenter(language="en", clean=False)
    return seg


def _strip_span(text: str, start: int, end: int) -> tuple[int, int] | None:
    """`[start, end)` without surrounding whitespace; None when only whitespace is left."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _blocks(text: str) -> Iterator[tuple[int, int]]:
    """Lines of `text` (pysbd breaks at every newline anyway), long lines cut into blocks of `_BLOCK_CHARS`."""
    pos = 0
    for line in text.splitlines(keepends=True):
        start, end = pos, pos + len(line)
        pos = end
        while end - start > _BLOCK_CHARS:
            window = text[start : start + _BLOCK_CHARS]
            # Prefer a likely sentence end, then any whitespace, then a hard cut.
            ends = list(_LAST_SENTENCE_END.finditer(window))
            cut = ends[-1].end() if ends else max(window.rfind(" "), window.rfind("\t")) + 1
            cut = cut if cut > 0 else _BLOCK_CHARS
            yield start, start + cut
            start += cut
        yield start, end


def _align(text: str, start: int, end: int, pieces: Iterable[str]) -> list[tuple[int, int]]:
    """Offsets of pysbd's pieces of `text[start:end]`, found by searching the original text.

    pysbd (clean=False) can still drop leading whitespace, so pieces are located rather than added up.
    Characters no piece accounts for join the piece before them, so no text is ever lost.
    """
    spans: list[tuple[int, int]] = []
    cursor = start
    for piece in pieces:
        core = piece.strip()
        if not core:
            continue
        found = text.find(core, cursor, end)
        if found < 0:
            break  # pysbd changed the text: the rest of the block stays one piece (below)
        if spans and _strip_span(text, cursor, found):
            spans[-1] = (spans[-1][0], found)  # unclaimed non-space text joins the previous piece
        elif not spans and _strip_span(text, start, found):
            found = start
        spans.append((found, found + len(core)))
        cursor = found + len(core)
    rest = _strip_span(text, cursor, end)
    if rest:
        if spans:
            spans[-1] = (spans[-1][0], rest[1])
        else:
            spans.append(rest)
    return [s for s in (_strip_span(text, a, b) for a, b in spans) if s]


def _keep_boundary(text: str, left: tuple[int, int], right: tuple[int, int]) -> bool:
    """Whether a boundary pysbd proposed between two pieces stands.

    pysbd over-splits in a few biomedical patterns (e.g. "5 mg/kg i.v. every 12 h. Symptoms" becomes
    "5 mg/kg | i.v. | every 12 | h. Symptoms"). A cut inside an entity costs far more than an overlong
    sentence, so a boundary stands only if the right piece does not start in lower case and either a line
    break separates the pieces, or the left one is more than one word (a one-word "sentence" is nearly
    always an abbreviation pysbd does not know, like "Cf.") and ends like a sentence (`.`, `!`, `?`, `…`,
    then closing quotes or brackets).
    """
    gap = text[left[1] : right[0]]
    if not gap:
        return False  # a hard block cut inside a word
    if text[right[0]].islower():
        return False
    if "\n" in gap:
        return True
    left_text = text[left[0] : left[1]]
    return not _NO_SPACE.fullmatch(left_text) and bool(_TERMINAL.search(left_text))


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Sentence offsets `[start, end)` in `text`, in order, stripped of surrounding whitespace.

    Each span is a slice of `text` (no character is changed), spans do not overlap, and every
    non-whitespace character of `text` is inside exactly one span.
    """
    seg = _segmenter()
    pieces: list[tuple[int, int]] = []
    for b_start, b_end in _blocks(text):
        block = text[b_start:b_end]
        if not block.strip():
            continue
        pieces.extend(_align(text, b_start, b_end, seg.segment(block)))
    sentences: list[tuple[int, int]] = []
    for piece in pieces:
        if sentences and not _keep_boundary(text, sentences[-1], piece):
            sentences[-1] = (sentences[-1][0], piece[1])
        else:
            sentences.append(piece)
    return sentences


def _cut_long(text: str, start: int, end: int, max_chars: int) -> Iterator[tuple[int, int]]:
    """Split `[start, end)` into pieces of at most `max_chars`, at the last whitespace that fits."""
    while end - start > max_chars:
        window = text[start : start + max_chars + 1]  # +1: a space right after the limit is a fine cut
        cut = max(window.rfind(" "), window.rfind("\n"), window.rfind("\t"))
        if cut <= 0:
            cut = max_chars  # no whitespace at all: a hard cut
        piece = _strip_span(text, start, start + cut)
        if piece:
            yield piece
        start += cut
        nxt = _strip_span(text, start, end)
        if nxt is None:
            return
        start = nxt[0]
    piece = _strip_span(text, start, end)
    if piece:
        yield piece


def split_passages(text: str, max_chars: int | None = None, pack: bool = False) -> list[tuple[int, int]]:
    """Passage offsets `[start, end)` of a document: sentences, or sentences packed up to `max_chars`.

    With `max_chars`, a sentence longer than that is cut at whitespace (a task must stay readable and
    bounded); with `pack=True`, consecutive sentences are joined while the passage stays within
    `max_chars`. Passages are slices of `text` with no surrounding whitespace.
    """
    if max_chars is not None and max_chars < 1:
        raise ValueError("max_chars must be positive")
    if pack and max_chars is None:
        raise ValueError("packing sentences into passages needs max_chars")
    spans = sentence_spans(text)
    if max_chars is not None:
        spans = [piece for a, b in spans for piece in _cut_long(text, a, b, max_chars)]
    if not pack:
        return spans
    packed: list[tuple[int, int]] = []
    for a, b in spans:
        if packed and b - packed[-1][0] <= max_chars:  # type: ignore[operator]
            packed[-1] = (packed[-1][0], b)
        else:
            packed.append((a, b))
    return packed


# ------------------------------------------------------------------------------------------ tasks
@dataclass(frozen=True)
class SplitOptions:
    """How documents become passages; the same options give the same passages, hence the same ref_ids."""

    max_chars: int | None = 1000
    pack: bool = False


def ref_id(doc_id: str, offset: int) -> str:
    return f"{doc_id}:{offset}"


def document_tasks(doc: Document, options: SplitOptions = SplitOptions()) -> Iterator[dict[str, Any]]:
    """Label Studio task data for each passage of `doc`: text, doc_id, doc_offset, ref_id (and doc_meta)."""
    for start, end in split_passages(doc.text, options.max_chars, options.pack):
        task: dict[str, Any] = {"text": doc.text[start:end], "doc_id": doc.doc_id, "doc_offset": start,
                                "ref_id": ref_id(doc.doc_id, start)}
        if doc.meta:
            task["doc_meta"] = doc.meta
        yield task


def iter_tasks_from_documents(docs: Iterable[Document], options: SplitOptions = SplitOptions()
                              ) -> Iterator[dict[str, Any]]:
    for doc in docs:
        yield from document_tasks(doc, options)


@dataclass
class ImportCounts:
    imported: int = 0
    skipped_existing: int = 0


class TaskImporter:
    """Streams tasks into a project in batches, skipping every `ref_id` the project (or this run) has.

    The project's existing ref_ids are read once up front (ids only, not texts), so re-importing the
    same documents imports nothing.
    """

    def __init__(self, existing_ref_ids: Iterable[Any], send: Callable[[list[dict[str, Any]]], None],
                 batch: int = 500) -> None:
        self.seen: set[str] = {str(r) for r in existing_ref_ids if r is not None}
        self.send, self.batch = send, batch
        self.counts = ImportCounts()
        self._pending: list[dict[str, Any]] = []

    def add(self, task: dict[str, Any]) -> bool:
        key = str(task["ref_id"])
        if key in self.seen:
            self.counts.skipped_existing += 1
            return False
        self.seen.add(key)
        self._pending.append(task)
        if len(self._pending) >= self.batch:
            self.flush()
        return True

    def flush(self) -> None:
        if self._pending:
            self.send(self._pending)
            self.counts.imported += len(self._pending)
            self._pending = []

    def run(self, tasks: Iterable[dict[str, Any]]) -> ImportCounts:
        for task in tasks:
            self.add(task)
        self.flush()
        return self.counts


def import_documents(ls: Any, project_id: int, path: str | Path, options: SplitOptions = SplitOptions(),
                     text_field: str = "text", id_field: str = "id", on_problem: ProblemSink | None = None,
                     batch: int = 500) -> ImportCounts:
    """Import a document collection into a Label Studio project as passage tasks (idempotent)."""
    from backend.labelstudio import explain, iter_tasks

    try:
        existing = [(t.get("data") or {}).get("ref_id") for t in iter_tasks(ls, project_id, fields="task_only")]
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, f"reading the tasks of project {project_id}") from exc

    def send(tasks: list[dict[str, Any]]) -> None:
        try:
            ls.projects.import_tasks(id=project_id, request=tasks)
        except Exception as exc:  # noqa: BLE001
            raise explain(exc, "importing tasks") from exc

    docs = iter_documents(path, text_field, id_field, on_problem)
    return TaskImporter(existing, send, batch).run(iter_tasks_from_documents(docs, options))


def write_tasks_json(tasks: Iterable[dict[str, Any]], out: Any) -> int:
    """Stream tasks into `out` as a JSON array of `{"data": ...}` (Label Studio's import file format)."""
    n = 0
    out.write("[")
    for task in tasks:
        out.write(",\n" if n else "\n")
        out.write(json.dumps({"data": task}, ensure_ascii=False))
        n += 1
    out.write("\n]\n" if n else "]\n")
    return n
