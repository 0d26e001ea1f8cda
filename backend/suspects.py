"""Learned sentence weights, relative to the median LLM-labelled sentence: one scale for every reader.

The reviewer's Data Manager column `llm_label_weight` and the acquisition's suspect score are two views of
the same number, so they can never disagree: relative = min(1, w / median), suspect = 1 − relative.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def relative_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """1.0 = a typical (median) training sentence or more; 0 = ignored by the reweighting."""
    if not weights:
        return {}
    values = np.fromiter(weights.values(), dtype=np.float64)
    ref = float(np.median(values)) or float(values.max()) or 1.0
    return {key: float(np.clip(w / ref, 0.0, 1.0)) for key, w in weights.items()}


def suspect_scores(ids: Sequence[str], weights: Mapping[str, float]) -> np.ndarray:
    """Higher = more suspect; tasks the student never trained on (no weight) score 0."""
    relative = relative_weights(weights)
    return np.array([1.0 - relative[i] if i in relative else 0.0 for i in ids])
