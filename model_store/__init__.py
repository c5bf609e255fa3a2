"""The model store: versioned checkpoints with cards, aliases, atomic publish and integrity checks.

``from_pretrained`` and ``pipeline`` live in ``model_store.pretrained`` (they build MindSpore models).
"""

from vitserve.model_store.card import Card
from vitserve.model_store.errors import (
    AliasedVersion,
    IntegrityError,
    InvalidCard,
    InvalidName,
    ModelNotFound,
    PromotionRefused,
    StoreError,
    VersionHeld,
)
from vitserve.model_store.store import ModelStore, default_root

__all__ = [
    "AliasedVersion",
    "Card",
    "IntegrityError",
    "InvalidCard",
    "InvalidName",
    "ModelNotFound",
    "ModelStore",
    "PromotionRefused",
    "StoreError",
    "VersionHeld",
    "default_root",
]
