"""Document subcommands (docs/documents.md):
  import-docs   --input PATH (--project ID | --out FILE|-)   split documents into passage tasks, import them
  extract       --model M --input PATH --out FILE|-          run a student over documents, write its entities
  export-model  --model M --out DIR                          a model version as a Hugging Face checkpoint

Deprecated spellings, still accepted (with a warning): `import-docs PATH`, `extract --output`,
`export-model MODEL`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from llmaaa.cli import deprecated_alias, deprecated_positional, kwargs_for, positive_int, project_id
from llmaaa.extract import FORMATS

MODEL_HELP = ("a model version name (looked up under LLMAAA_DATA_DIR/projects/*/models), `latest` with "
              "--project, or a directory (a version, its model/, or an exported checkpoint)")
INPUT_HELP = "documents: a folder (recursive), a .jsonl, a .csv/.tsv or a text file"


def add_reading_arguments(p: argparse.ArgumentParser, default_max_chars: int | None) -> None:
    p.add_argument("--text-field", default="text", help="JSONL field / CSV column holding the text (default: text)")
    p.add_argument("--id-field", default="id", help="JSONL field / CSV column holding the document id "
                   "(default: id; without one: <file>:<line>)")
    p.add_argument("--max-chars", type=positive_int, default=default_max_chars,
                   help="cut sentences longer than this at whitespace; with --pack, the passage size "
                        f"(default: {default_max_chars or 'no cut'})")
    p.add_argument("--pack", action="store_true", help="pack consecutive sentences into passages of up to "
                   "--max-chars instead of one sentence per passage")


def register(sub: Any) -> None:
    imp = sub.add_parser("import-docs", help="split raw documents (folder of .txt, JSONL, CSV) into passage tasks "
                         "and import them into a Label Studio project (re-import adds nothing)")
    source = imp.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", type=Path, metavar="PATH", help=INPUT_HELP)
    deprecated_positional(source, "--input", "input", "PATH", type=Path)
    target = imp.add_mutually_exclusive_group(required=True)
    target.add_argument("--project", type=project_id, metavar="ID",
                        help="Label Studio project id (LABEL_STUDIO_URL / _API_KEY)")
    target.add_argument("--out", metavar="FILE", help="write a Label Studio tasks JSON file instead (- for stdout)")
    add_reading_arguments(imp, 1000)
    imp.add_argument("--ls-url", help="Label Studio URL (default: LABEL_STUDIO_URL)")
    imp.set_defaults(func=cmd_import_docs)

    # `dest`s are extract_to_file's parameter names (kwargs_for passes them on by name).
    ext = sub.add_parser("extract", help="run a trained student over a document collection and write its entities")
    ext.add_argument("--model", required=True, metavar="MODEL", help=MODEL_HELP)
    ext.add_argument("--project", type=project_id, metavar="ID", help="the project whose model versions --model names")
    ext.add_argument("--input", dest="input_path", required=True, type=Path, metavar="PATH", help=INPUT_HELP)
    out = ext.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", dest="output", metavar="FILE", help="output file (- for stdout)")
    deprecated_alias(out, "--output", "--out", "output")
    ext.add_argument("--format", dest="fmt", choices=FORMATS, default="jsonl", help="default: jsonl")
    add_reading_arguments(ext, None)
    ext.add_argument("--batch-size", type=positive_int, default=32)
    ext.add_argument("--overlap", type=int, default=None, help="sub-tokens shared by consecutive windows of a "
                     "passage longer than the model's input (default: a quarter of the window)")
    ext.add_argument("--include-text", action="store_true", help="jsonl: also write each document's text")
    ext.add_argument("--llm-fallback", action="store_true",
                     help="ask the LLM (OPENAI_BASE_URL, LLM_MODEL) for passages the student is unsure about")
    ext.add_argument("--threshold", type=float, default=0.6,
                     help="with --llm-fallback: passages whose least confident word is below this go to the LLM")
    ext.add_argument("--labels", dest="labels_file", type=Path, metavar="FILE",
                     help="with --llm-fallback: labels file with descriptions for the prompt")
    ext.add_argument("--llm-concurrency", type=positive_int, default=None)
    ext.add_argument("--no-progress", dest="progress", action="store_false")
    ext.set_defaults(func=cmd_extract)

    exp = sub.add_parser("export-model", help="write a model version as a standard Hugging Face "
                         "token-classification checkpoint with a model card")
    model = exp.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", dest="spec", metavar="MODEL", help=MODEL_HELP)
    deprecated_positional(model, "--model", "spec", "MODEL")
    exp.add_argument("--out", required=True, type=Path, metavar="DIR", help="target directory")
    exp.add_argument("--project", type=project_id, metavar="ID", help="the project whose model versions --model names")
    exp.add_argument("--force", action="store_true", help="replace a non-empty target directory")
    exp.set_defaults(func=cmd_export_model)


def _print_problems(problems: list[str]) -> None:
    if problems:
        print(f"skipped {len(problems)} file(s)/record(s):", file=sys.stderr)
        for p in problems[:50]:
            print(f"  {p}", file=sys.stderr)
        if len(problems) > 50:
            print(f"  ... and {len(problems) - 50} more", file=sys.stderr)


def cmd_import_docs(args: argparse.Namespace) -> int:
    from llmaaa.documents import SplitOptions, iter_documents, iter_tasks_from_documents, write_tasks_json

    options = SplitOptions(args.max_chars, args.pack)
    problems: list[str] = []
    if not args.input.exists():
        print(f"error: {args.input}: no such file or folder", file=sys.stderr)
        return 2
    if args.out:
        from llmaaa.extract import open_output

        docs = iter_documents(args.input, args.text_field, args.id_field, lambda p: problems.append(str(p)))
        with open_output(args.out) as fh:
            n = write_tasks_json(iter_tasks_from_documents(docs, options), fh)
        _print_problems(problems)
        summary: dict[str, Any] = {"tasks": n, "out": args.out, "skipped": len(problems)}
        print(json.dumps(summary), file=sys.stderr if args.out == "-" else sys.stdout)
        return 0
    from backend.labelstudio import LabelStudioError, connect
    from backend.settings import get_settings
    from llmaaa.documents import import_documents

    settings = get_settings()
    key = settings.label_studio_api_key.get_secret_value() if settings.label_studio_api_key else ""
    try:
        ls = connect(args.ls_url or settings.label_studio_url or "", key)
        counts = import_documents(ls, args.project, args.input, options, args.text_field, args.id_field,
                                  lambda p: problems.append(str(p)))
    except (LabelStudioError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _print_problems(problems)
    print(json.dumps({"project": args.project, "imported": counts.imported,
                      "skipped_existing": counts.skipped_existing, "skipped_files_or_records": len(problems)}))
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from llmaaa.documents import SplitOptions
    from llmaaa.extract import extract_to_file

    if args.pack and args.max_chars is None:
        print("error: --pack needs --max-chars", file=sys.stderr)
        return 2
    try:
        report = extract_to_file(**kwargs_for(
            extract_to_file, args, split=SplitOptions(args.max_chars, args.pack),
            fallback_threshold=args.threshold if args.llm_fallback else None, on_problem=lambda p: None))
    except (OSError, ValueError) as exc:  # OSError: FileNotFoundError, an unwritable --out, ...
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _print_problems(report.problems)
    print(json.dumps(report.to_dict(), indent=2), file=sys.stderr if args.output == "-" else sys.stdout)
    return 0


def cmd_export_model(args: argparse.Namespace) -> int:
    from llmaaa.export import export_model

    try:
        out = export_model(**kwargs_for(export_model, args))
    except (OSError, ValueError) as exc:  # OSError: FileNotFoundError, FileExistsError, ...
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"exported": str(out)}))
    return 0
