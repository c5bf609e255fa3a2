"""The store's errors. Every message names the model (and version) it is about."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every model-store error."""


class InvalidName(StoreError, ValueError):
    """A model name, alias or reference that the store cannot accept (e.g. path traversal)."""


class ModelNotFound(StoreError, LookupError):
    """An unknown model name, version or alias; the message lists what the store does have."""


class InvalidCard(StoreError, ValueError):
    """A version refused at publish: what its card would say cannot be stored (e.g. a label with a newline)."""


class IntegrityError(StoreError):
    """A stored version is damaged: sha256 mismatch, a missing file, weights that do not fit its card, or a
    card whose entries cannot be trusted (weights outside its directory, a label with a control character)."""


class PromotionRefused(StoreError):
    """Eval-gated promotion refused: the candidate's metric is below the current production version's."""

    def __init__(self, message: str, *, candidate: float | None, current: float | None) -> None:
        super().__init__(message)
        self.candidate = candidate
        self.current = current


class AliasedVersion(StoreError):
    """A version cannot be deleted while an alias points at it."""


class VersionHeld(StoreError):
    """A version cannot be deleted while a running replica's live lease holds it (it is loaded there)."""
