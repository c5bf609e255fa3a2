"""Logits to answers: softmax, top-k and labels. The one postprocessing step every caller uses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Prediction:
    """One class of an answer: its label, its index in the model's head and its probability."""

    label: str
    index: int
    score: float


def softmax(logits: np.ndarray) -> np.ndarray:
    """``(..., C)`` logits → probabilities over the last axis, in float64.

    float64 and the max subtracted: large logits do not overflow, small probabilities do not underflow to a
    tie, so the order of the top-k is the order of the logits.
    """
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def top_k(logits: np.ndarray, k: int, labels: Sequence[str]) -> list[Prediction]:
    """The ``k`` most probable classes of one ``(C,)`` logit row, highest first (ties: lower index first).

    A class without a label (a label list shorter than the head) is named by its index.
    """
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}")
    probs = softmax(logits)
    order = np.argsort(-probs, kind="stable")[:k]
    return [
        Prediction(label=labels[i] if i < len(labels) else str(i), index=int(i), score=float(probs[i])) for i in order
    ]
