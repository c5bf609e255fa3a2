"""``runtime.postprocess``: the one softmax/top-k/labels step of every caller."""

from __future__ import annotations

import numpy as np
import pytest

from vitserve.runtime.postprocess import softmax, top_k


def test_top_k_is_sorted_softmax_with_labels_and_indices() -> None:
    logits = np.array([0.5, 3.0, -1.0, 2.0], np.float32)
    best = top_k(logits, 2, ["a", "b", "c", "d"])
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert [(p.label, p.index) for p in best] == [("b", 1), ("d", 3)]
    assert [p.score for p in best] == pytest.approx([probs[1], probs[3]])


def test_a_short_label_list_names_the_rest_by_index() -> None:
    """A head wider than its label list (a card written by hand) answers, it does not raise IndexError."""
    (best,) = top_k(np.array([0.0, 0.0, 9.0]), 1, ["only", "two"])
    assert (best.label, best.index) == ("2", 2) and best.score == pytest.approx(1.0, abs=1e-3)


def test_huge_logits_neither_overflow_nor_reorder_and_ties_keep_index_order() -> None:
    logits = np.array([1e4, 1e4 - 1, 1e4, -1e4], np.float32)
    best = top_k(logits, 4, list("wxyz"))
    assert [p.index for p in best] == [0, 2, 1, 3]
    assert all(np.isfinite(p.score) for p in best) and sum(p.score for p in best) == pytest.approx(1.0)


def test_softmax_is_per_row_and_k_must_be_positive() -> None:
    rows = softmax(np.array([[0.0, 0.0], [0.0, np.log(3.0)]]))
    np.testing.assert_allclose(rows, [[0.5, 0.5], [0.25, 0.75]])
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        top_k(np.zeros(3), 0, ["a", "b", "c"])
