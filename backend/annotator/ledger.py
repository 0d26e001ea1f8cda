"""Append-only JSONL ledger of LLM usage and cost, one line per annotation call (cache hits included).

Price table: USD per 1,000 tokens, `{model: [prompt, completion]}` or
`{model: {"prompt": p, "completion": c}}`, e.g. `{"gpt-4o-mini": [0.00015, 0.0006]}`. Taken from (in
order, later ones overriding): the built-in defaults below, the JSON file `prices_file` (the
backend passes `LLM_PRICES_FILE`), the JSON text of the `LLM_PRICES` environment variable, and the
`prices` argument. A model is priced by its exact name, else by the longest table name it starts
with (so `gpt-4o-mini-2024-07-18` uses `gpt-4o-mini`). An unknown model costs 0 and its lines say so.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# List prices (USD per 1K tokens) at the time of writing; override them rather than trust them.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.00015, 0.0006),
    "gpt-4o": (0.0025, 0.01),
    "gpt-4.1-mini": (0.0004, 0.0016),
    "gpt-4.1-nano": (0.0001, 0.0004),
    "gpt-4.1": (0.002, 0.008),
    "gpt-3.5-turbo": (0.0005, 0.0015),
}
PRICES_ENV = "LLM_PRICES"


def parse_prices(data: Any, source: str = "prices") -> dict[str, tuple[float, float]]:
    """Validate a price table (see the module docstring for the two accepted entry forms)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a JSON object of model -> prices")
    table: dict[str, tuple[float, float]] = {}
    for model, entry in data.items():
        try:
            if isinstance(entry, Mapping):
                pair = (float(entry["prompt"]), float(entry["completion"]))
            else:
                p, c = entry
                pair = (float(p), float(c))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {model!r} needs [prompt, completion] USD per 1K tokens") from exc
        if min(pair) < 0:
            raise ValueError(f"{source}: {model!r} has a negative price")
        table[str(model)] = pair
    return table


def load_prices(prices: Mapping[str, Any] | None = None, prices_file: str | Path | None = None,
                use_env: bool = True) -> dict[str, tuple[float, float]]:
    table = dict(DEFAULT_PRICES)
    if prices_file:
        path = Path(prices_file)
        try:
            table.update(parse_prices(json.loads(path.read_text(encoding="utf-8")), str(path)))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc.msg})") from exc
    if use_env and os.environ.get(PRICES_ENV):
        try:
            table.update(parse_prices(json.loads(os.environ[PRICES_ENV]), PRICES_ENV))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{PRICES_ENV}: not valid JSON ({exc.msg})") from exc
    if prices:
        table.update(parse_prices(prices, "prices"))
    return table


def _empty_row() -> dict[str, Any]:
    return {"calls": 0, "cached_calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "usd": 0.0,
            "unpriced_calls": 0}


class CostLedger:
    """`record()` one line per call; `summary()` totals per model. Safe across threads and processes."""

    def __init__(self, path: str | Path, prices: Mapping[str, Any] | None = None,
                 prices_file: str | Path | None = None, use_env: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.prices = load_prices(prices, prices_file, use_env)
        self._lock = threading.Lock()
        # summary() reads only what was appended since last time (other processes append too).
        self._offset = 0
        self._totals: dict[str, dict[str, Any]] = {}

    def price(self, model: str) -> tuple[float, float] | None:
        if model in self.prices:
            return self.prices[model]
        prefixes = [name for name in self.prices if model.startswith(name)]
        return self.prices[max(prefixes, key=len)] if prefixes else None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        price = self.price(model)
        if price is None:
            return None
        return prompt_tokens / 1000 * price[0] + completion_tokens / 1000 * price[1]

    def record(self, model: str, prompt_tokens: int = 0, completion_tokens: int = 0, cached: bool = False,
               ok: bool = True, latency_s: float | None = None, reason: str | None = None) -> dict[str, Any]:
        """Append one call. A cache hit is free: it records zero tokens and zero cost.

        `reason`: why a paid reply was unusable (`cut_off`, `malformed_reply`, ...); only with `ok=False`.
        """
        if cached:
            prompt_tokens = completion_tokens = 0
        usd = self.cost(model, prompt_tokens, completion_tokens)
        entry: dict[str, Any] = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "model": model,
            "prompt_tokens": int(prompt_tokens),
            "completion_tokens": int(completion_tokens),
            "cached": bool(cached),
            "ok": bool(ok),
            "usd": round(usd or 0.0, 8),
        }
        if latency_s is not None:
            entry["latency_s"] = round(latency_s, 3)
        if reason and not ok:
            entry["reason"] = reason
        if usd is None:
            entry["note"] = f"no price for model {model!r}: cost counted as 0"
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line)  # one write of one line, O_APPEND: lines of concurrent writers do not mix
        return entry

    def summary(self) -> dict[str, dict[str, Any]]:
        """`{model: {calls, cached_calls, prompt_tokens, completion_tokens, usd, unpriced_calls}}`."""
        with self._lock:
            if not self.path.exists():
                return {}
            size = self.path.stat().st_size
            if size < self._offset:  # the file was replaced or truncated: start over
                self._offset, self._totals = 0, {}
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read(size - self._offset)
            complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being written is read next time
            self._offset += len(complete)
            for raw in complete.splitlines():
                try:
                    entry = json.loads(raw)
                    model = str(entry["model"])
                    values = (int(bool(entry.get("cached"))), int(entry.get("prompt_tokens", 0)),
                              int(entry.get("completion_tokens", 0)), float(entry.get("usd", 0.0)))
                except (ValueError, KeyError, TypeError):
                    log.warning("cost ledger %s: skipping a bad line", self.path)
                    continue
                row = self._totals.setdefault(model, _empty_row())
                row["calls"] += 1
                row["cached_calls"] += values[0]
                row["prompt_tokens"] += values[1]
                row["completion_tokens"] += values[2]
                row["usd"] = round(row["usd"] + values[3], 8)
                row["unpriced_calls"] += int("note" in entry)
            return {model: dict(row) for model, row in sorted(self._totals.items())}
