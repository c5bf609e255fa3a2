"""Eval-gated promotion: a version may not replace production if it measured worse on the same data."""

from __future__ import annotations

from vitserve.model_store.card import Card
from vitserve.model_store.errors import PromotionRefused

GATED_ALIAS = "production"
GATE_METRIC = "top1"


def check_promotion(candidate: Card, current: Card | None, dataset: str | None) -> None:
    """Raise ``PromotionRefused`` (with both numbers) if ``candidate`` is worse than ``current`` production.

    With ``dataset`` named, the candidate must have a recorded ``top1`` on it, and that value must not be
    below production's (when production has one). Without a dataset, every dataset on which both versions
    have a recorded ``top1`` is compared; none in common means nothing to compare, and promotion goes ahead.
    """
    if current is None or current.version == candidate.version:
        return
    if dataset is not None:
        mine = _top1(candidate, dataset)
        if mine is None:
            raise PromotionRefused(
                f"refusing to promote {candidate.ref} to {GATED_ALIAS}: it has no recorded {GATE_METRIC} on "
                f"{dataset!r} (evaluate it first, or force)",
                candidate=None,
                current=_top1(current, dataset),
            )
        datasets = [dataset]
    else:
        datasets = sorted(d for d in candidate.metrics if _top1(candidate, d) is not None)
    for name in datasets:
        mine, theirs = _top1(candidate, name), _top1(current, name)
        if mine is not None and theirs is not None and mine < theirs:
            raise PromotionRefused(
                f"refusing to promote {candidate.ref} to {GATED_ALIAS}: {GATE_METRIC} on {name!r} is {mine:.4f}, "
                f"below {current.ref}'s {theirs:.4f} (use force to override)",
                candidate=mine,
                current=theirs,
            )


def _top1(card: Card, dataset: str) -> float | None:
    value = card.metrics.get(dataset, {}).get(GATE_METRIC)
    return None if value is None else float(value)
