"""Talking to Label Studio through `label-studio-sdk`, with the traps of LS 1.23.2 turned into clear errors."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from backend.labeling_config import LabelSchema
from training.spans import Span

log = logging.getLogger(__name__)


class LabelStudioError(RuntimeError):
    """Label Studio refused or could not be reached; the message says what to change."""


def connect(url: str, api_key: str, timeout: float = 30.0) -> LabelStudio:
    if not url:
        raise LabelStudioError("no Label Studio URL configured (LABEL_STUDIO_URL)")
    if not api_key:
        # The SDK would crash deep inside httpx on an empty `Token ` header.
        raise LabelStudioError("no Label Studio API key configured (LABEL_STUDIO_API_KEY)")
    return LabelStudio(base_url=url.rstrip("/"), api_key=api_key, timeout=timeout)


def explain(exc: Exception, doing: str) -> LabelStudioError:
    """Turn an SDK/HTTP failure into an actionable message (without any token in it)."""
    if isinstance(exc, ApiError):
        body = str(exc.body)[:500]
        if exc.status_code == 401:
            hint = (
                "the API key was rejected. Legacy `Token` keys need LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true "
                "on Label Studio's first start (or POST /api/jwt/settings), or use a personal access token"
            )
        elif exc.status_code == 403 and "reserved network address" in body:
            hint = (
                "Label Studio blocks local addresses: start it with both LABEL_STUDIO_ML_BLOCK_LOCAL_IP=false "
                "and LABEL_STUDIO_SSRF_PROTECTION_ENABLED=false, or run the backend on a non-local address"
            )
        else:
            hint = f"HTTP {exc.status_code}: {body}"
        return LabelStudioError(f"{doing} failed: {hint}")
    return LabelStudioError(f"{doing} failed: Label Studio is unreachable ({type(exc).__name__}: {exc})")


# Label Studio's project ids are database integers; anything outside this range is not one of its ids
# (and 10**300 used to become a file name too long for the disk).
MAX_PROJECT_ID = 2**31 - 1
# ASCII digits only: `str.isdigit` and `int` also accept Arabic-Indic and other Unicode digits.
_PROJECT_REF = re.compile(r"([0-9]{1,10})(?:\.[0-9]{1,20})?")


def project_id_of(value: Any) -> int:
    """`/setup` and `/predict` send `"<id>.<created_at>"` (or the bare id); webhooks send the project object.

    Only a positive integer up to `MAX_PROJECT_ID` is an id: booleans, floats, negative numbers,
    non-ASCII digits and huge numbers raise ValueError (the message never echoes a huge value).
    """
    if isinstance(value, Mapping):
        value = value.get("id")
    pid: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        pid = value if -MAX_PROJECT_ID <= value <= MAX_PROJECT_ID else MAX_PROJECT_ID + 1
    elif isinstance(value, str):
        match = _PROJECT_REF.fullmatch(value)
        pid = int(match.group(1)) if match else None
    if pid is None:
        shown = repr(value) if isinstance(value, str | type(None)) else type(value).__name__
        raise ValueError(f"cannot read a project id from {shown[:40]}: expected a positive integer "
                         "or \"<id>.<created_at>\"")
    if not 1 <= pid <= MAX_PROJECT_ID:
        raise ValueError(f"a project id must be an integer from 1 to {MAX_PROJECT_ID}")
    return pid


def result_to_spans(result: Iterable[Mapping[str, Any]], schema: LabelSchema, text: str) -> list[Span]:
    """Regions of our `<Labels>` tag whose offsets and text agree with the task text."""
    spans: list[Span] = []
    for region in result or []:
        if not isinstance(region, Mapping):
            continue
        if region.get("type") != "labels" or region.get("from_name") != schema.from_name:
            continue
        value = region.get("value") or {}
        try:
            start, end = int(value["start"]), int(value["end"])
            label = str(value["labels"][0])
        except (KeyError, IndexError, TypeError, ValueError, OverflowError):  # inf offsets overflow int()
            continue
        if not (0 <= start < end <= len(text)):
            continue
        if "text" in value and value["text"] != text[start:end]:
            continue
        spans.append(Span(start, end, label))
    return sorted(spans)


def submitted_annotation(task: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The newest non-cancelled annotation of a task (a skip is not a verification)."""
    annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not annotations:
        return None
    return max(annotations, key=lambda a: (a.get("updated_at") or "", a.get("id") or 0))


def task_dict(task: Any) -> dict[str, Any]:
    return task if isinstance(task, dict) else task.dict() if hasattr(task, "dict") else dict(task)


def iter_tasks(ls: LabelStudio, project_id: int, fields: str = "all") -> Iterator[dict[str, Any]]:
    for task in ls.tasks.list(project=project_id, fields=fields):
        yield task_dict(task)


def import_predictions_checked(
    ls: LabelStudio, project_id: int, schema: LabelSchema, predictions: Sequence[dict[str, Any]],
    texts: Mapping[int, str] | None = None,
) -> int:
    """Validate first, because `import_predictions` silently drops invalid items; then check the count."""
    problems: list[str] = []
    for p in predictions:
        errors = schema.validate_prediction(p, text=(texts or {}).get(p.get("task")))
        if errors:
            problems.append(f"task {p.get('task')}: {'; '.join(map(str, errors))}")
    if problems:
        raise LabelStudioError(f"{len(problems)} invalid predictions, none uploaded: {problems[:5]}")
    if not predictions:
        return 0
    try:
        response = ls.projects.import_predictions(id=project_id, request=list(predictions))
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, "importing predictions") from exc
    created = int(getattr(response, "created", 0) or 0)
    if created != len(predictions):
        raise LabelStudioError(
            f"Label Studio stored {created} of {len(predictions)} predictions (it drops invalid items silently)"
        )
    return created


def _raw(ls: LabelStudio, method: str, path: str, **kwargs: Any) -> Any:
    """A call the SDK has no method for, through its own authenticated HTTP client."""
    response = ls._client_wrapper.httpx_client.request(path, method=method, **kwargs)  # noqa: SLF001
    response.raise_for_status()
    return response.json() if response.content else None


def model_versions(ls: LabelStudio, project_id: int) -> dict[str, int]:
    """Prediction count per model version (`GET /api/projects/<id>/model-versions/`), in one call."""
    return {str(k): int(v) for k, v in (_raw(ls, "GET", f"api/projects/{project_id}/model-versions/") or {}).items()}


def delete_version(ls: LabelStudio, project_id: int, version: str) -> int:
    """Every prediction of one version in one call: one DELETE per prediction took 0.42 s each under load."""
    body = _raw(ls, "DELETE", f"api/projects/{project_id}/model-versions/", json={"model_version": version})
    # 1.23.2 answers {"deleted_predictions": N}; older versions a bare count.
    return int((body.get("deleted_predictions") if isinstance(body, dict) else body) or 0)


def patch_task_data(ls: LabelStudio, updates: Mapping[int, dict[str, Any]], concurrency: int = 8) -> int:
    """PATCH several tasks' data in parallel. Label Studio 1.23.2 has no bulk data update, and a PATCH
    replaces `data` as a whole, so each update carries every field."""
    if not updates:
        return 0
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(updates)))) as pool:
        list(pool.map(lambda item: ls.tasks.update(id=item[0], data=item[1]), updates.items()))
    return len(updates)


def update_task_data(ls: LabelStudio, tasks: Iterable[dict[str, Any]], updates: Mapping[int, dict[str, Any]],
                     concurrency: int = 8) -> int:
    """`patch_task_data`, then the same data into the caller's task dicts. A PATCH replaces `data` whole,
    so a later writer holding the old dict (the retrain job marks suspects, then the acquisition round
    writes `llm_status`) would otherwise erase the field just written."""
    written = patch_task_data(ls, updates, concurrency)
    for task in tasks:
        new = updates.get(int(task["id"]))
        if new is not None:
            task["data"] = dict(new)
    return written
