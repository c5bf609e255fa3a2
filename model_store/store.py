"""``ModelStore``: versioned checkpoints with cards and aliases in a local directory.

This module reads, publishes, updates cards and removes; the alias and canary moves are ``AliasRecords``
(``model_store.aliases``), what replicas poll and hold is ``FleetRecords`` (``model_store.fleet``): both are
bases of ``ModelStore``, so that every operation is a method of the store. The version directories, their cards
and the model's lock, which all of them read, are plain functions in ``model_store.versions``.

Layout (the store is the one place that knows it)::

    <root>/<name>/<version>/model.ckpt      weights (MindSpore .ckpt)
    <root>/<name>/<version>/card.json       the Card (config, data, labels, sha256, lineage, metrics, ...)
    <root>/<name>/aliases.json              alias → version, and each alias's history (for rollback)
    <root>/<name>/.lock                     flock held by every multi-step change, checks to write (``versions``)
    <root>/<name>/.last_version             highest version number ever claimed (numbers are never reused)
    <root>/<name>/.staging-<id>/ (+ .lock)  a publish in progress; invisible to readers, removed by gc
    <root>/<name>/.trash-<v>-<id>/          a delete in progress; invisible, removed by gc
    <root>/.leases/<replica>.json           the versions a running replica holds (``model_store.leases``)

Publishing writes and verifies a complete version in a staging directory and then claims the next number
with one ``os.rename`` of the directory, so a reader sees a whole version or none, whenever the writer dies.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vitserve.model_store.aliases import AliasRecords, production_card, read_aliases, write_aliases
from vitserve.model_store.card import CACHE_DIR, CARD_FILE, WEIGHTS_FILE, Card, check_labels
from vitserve.model_store.errors import (
    AliasedVersion,
    IntegrityError,
    InvalidCard,
    InvalidName,
    ModelNotFound,
    VersionHeld,
)
from vitserve.model_store.fleet import FleetRecords
from vitserve.model_store.leases import LeaseBook, describe_holders
from vitserve.model_store.leftovers import remove_leftovers
from vitserve.model_store.locking import hold_lock
from vitserve.model_store.promotion import GATED_ALIAS, check_promotion
from vitserve.model_store.reference import parse_reference, validate_name
from vitserve.model_store.serving import check_serving
from vitserve.model_store.staging import PAUSE_ENV, pause, write_verified
from vitserve.model_store.versions import (
    model_lock,
    model_names,
    read_version_card,
    require_numbers,
    version_numbers,
    weights_path,
)
from vitserve.model_store.weights import check_weights
from vitserve.vit.checkpoint import StateDict, load_checkpoint_file
from vitserve.vit.config import DataConfig, ViTConfig
from vitserve.vit.files import fsync_dir, sha256_file, write_text_atomic

log = logging.getLogger(__name__)

ROOT_ENV = "VITSERVE_STORE_ROOT"
DEFAULT_ROOT = "./store"
_COUNTER_FILE = ".last_version"
_EXPIRED_LEASE_KEPT_S = 3600.0  # gc removes lease files expired for longer (they no longer count anyway)


def default_root() -> Path:
    """The store root from ``VITSERVE_STORE_ROOT``, else ``./store``."""
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


class ModelStore(AliasRecords, FleetRecords):
    """A model store rooted at a local directory (created on first publish). Safe across processes."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.leases = LeaseBook(self.root)

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    # ----- reading -----------------------------------------------------------------------------------------

    def list_models(self) -> list[str]:
        """Names that have at least one published version, sorted."""
        return model_names(self.root)

    def versions(self, name: str) -> list[Card]:
        """Every published version of ``name``, oldest first; ``ModelNotFound`` if there is none."""
        return [self.card(name, v) for v in require_numbers(self.root, name)]

    def card(self, name: str, version: int) -> Card:
        """The card of ``name:version`` (``ModelNotFound`` if absent, ``IntegrityError`` if it cannot be trusted:
        unreadable, weights named outside its directory, a label with a control character, ...)."""
        return read_version_card(self.root, name, version)

    def resolve(self, ref: str) -> Card:
        """``name`` → the production alias, else the latest version; ``name:7``; ``name@alias``."""
        parsed = parse_reference(ref)
        numbers = require_numbers(self.root, parsed.name)
        if parsed.version is not None:
            return self.card(parsed.name, parsed.version)
        table = read_aliases(self.root / parsed.name)
        if parsed.alias is not None:
            if parsed.alias not in table.aliases:
                have = ", ".join(f"{a}→{v}" for a, v in sorted(table.aliases.items())) or "none"
                raise ModelNotFound(f"{ref}: no alias {parsed.alias!r} on {parsed.name!r}; aliases: {have}")
            return self.card(parsed.name, table.aliases[parsed.alias])
        return self.card(parsed.name, table.aliases.get(GATED_ALIAS, numbers[-1]))

    def load(self, ref: str) -> tuple[StateDict, Card]:
        """Weights and card of ``ref``, verified: sha256 of the file, then every key and shape vs the card."""
        card = self.verify(ref)
        path = weights_path(self.root, card)
        try:
            state = load_checkpoint_file(path)
            check_weights(state, card.config)
        except (OSError, ValueError) as err:
            raise IntegrityError(f"{card.ref}: weights do not match the card: {err}") from err
        return state, card

    def verify(self, ref: str) -> Card:
        """Check ``ref``'s weights file against its card's sha256 (no MindSpore needed); return the card."""
        card = self.resolve(ref)
        path = weights_path(self.root, card)
        if not path.is_file():
            raise IntegrityError(f"{card.ref}: weights file {card.weights} is missing from {path.parent}")
        actual = sha256_file(path)
        if actual != card.sha256:
            raise IntegrityError(f"{card.ref}: sha256 mismatch for {card.weights} (card {card.sha256}, file {actual})")
        return card

    def version_dir(self, card: Card) -> Path:
        """The directory holding ``card``'s version."""
        return self.root / card.name / str(card.version)

    def cache_dir(self, card: Card) -> Path:
        """The folder for artefacts derived from ``card``'s weights (exports, compiled graphs), created on demand.

        Everything in it can be rebuilt from the version; its files' names and freshness are the writer's.
        """
        path = self.version_dir(card) / CACHE_DIR
        path.mkdir(exist_ok=True)
        return path

    # ----- publishing --------------------------------------------------------------------------------------

    def publish(
        self,
        name: str,
        state: Mapping[str, np.ndarray],
        config: ViTConfig,
        data: DataConfig,
        labels: Sequence[str],
        *,
        lineage: dict[str, Any],
        metrics: dict[str, dict[str, float]] | None = None,
        description: str = "",
        aliases: Sequence[str] = (),
    ) -> Card:
        """Add ``state`` as the next version of ``name`` and return its card.

        Atomic: the version appears whole or not at all, whenever the process dies. Concurrent publishers get
        distinct numbers. ``aliases`` are pointed at the new version in the same step (``production`` is
        eval-gated as in ``set_alias``; a refusal publishes nothing).
        """
        weights = _checked_weights(name, state, config, labels, aliases)
        card = Card(
            name=name,
            version=0,  # the real number is claimed under the lock
            config=config,
            data=data,
            labels=[str(label) for label in labels],
            weights=WEIGHTS_FILE,
            lineage=dict(lineage),
            metrics={k: {m: float(x) for m, x in v.items()} for k, v in (metrics or {}).items()},
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            description=description,
        )
        model_dir = self.root / name
        model_dir.mkdir(parents=True, exist_ok=True)
        staging = model_dir / f".staging-{uuid.uuid4().hex}"
        # Held until the version is claimed: gc removes a staging dir only when it can take this lock.
        owner = hold_lock(staging.with_name(staging.name + ".lock"))
        try:
            staging.mkdir()
            pause("staging")
            card = card.replace(sha256=write_verified(weights, config, staging / WEIGHTS_FILE))
            pause("verified")
            with model_lock(self.root, name):
                card = self._claim(staging, card, aliases)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
            staging.with_name(staging.name + ".lock").unlink(missing_ok=True)
            os.close(owner)
        log.info("published %s (sha256 %s)", card.ref, card.sha256[:12])
        return card

    def _claim(self, staging: Path, card: Card, aliases: Sequence[str]) -> Card:
        """Under the model lock: gate the aliases, write the card, rename staging → the next free number."""
        model_dir = staging.parent
        table = read_aliases(model_dir)
        version = max([*version_numbers(self.root, card.name), _read_counter(model_dir)], default=0) + 1
        if GATED_ALIAS in aliases:
            check_promotion(card.replace(version=version), production_card(self.root, card.name, table), None)
        while True:
            card = card.replace(version=version)
            write_text_atomic(staging / CARD_FILE, card.to_json())
            pause("card")
            try:
                os.rename(staging, model_dir / str(version))
                break
            except OSError:  # taken (a writer on a filesystem where flock is not shared): try the next one
                if not (model_dir / str(version)).exists():
                    raise
                version += 1
        fsync_dir(model_dir)
        write_text_atomic(model_dir / _COUNTER_FILE, f"{version}\n")
        pause("claimed")
        if aliases:
            for alias in aliases:
                table.point(alias, version)
            write_aliases(model_dir, table)
        return card

    # ----- card updates ------------------------------------------------------------------------------------

    def record_metrics(self, ref: str, dataset: str, metrics: Mapping[str, float]) -> Card:
        """Store ``metrics`` (e.g. ``{"top1": 0.91, "top5": 0.99}``) under ``dataset`` in the card of ``ref``."""
        if not dataset:
            raise ValueError("record_metrics needs a dataset name")
        values = {k: float(v) for k, v in metrics.items()}
        return self._update_card(ref, lambda card: card.replace(metrics={**card.metrics, dataset: values}))

    def set_serving(self, ref: str, **options: str) -> Card:
        """Merge serving ``options`` (e.g. ``precision="int8"``) into the card of ``ref``; the accepted ones are
        in ``model_store.serving.SERVING_OPTIONS``, anything else is a ``ValueError`` and changes nothing."""
        card = self.resolve(ref)
        checked = check_serving(card.ref, options)
        card = self._update_card(card.ref, lambda current: current.replace(serving={**current.serving, **checked}))
        log.info("%s serving options: %s", card.ref, card.serving)
        return card

    def _update_card(self, ref: str, change: Callable[[Card], Card]) -> Card:
        """Rewrite the card of ``ref`` as ``change`` makes it, atomically, under the model lock."""
        card = self.resolve(ref)
        with model_lock(self.root, card.name):
            card = change(self.card(card.name, card.version))  # re-read under the lock: keep concurrent updates
            write_text_atomic(self.version_dir(card) / CARD_FILE, card.to_json())
        return card

    # ----- removal -----------------------------------------------------------------------------------------

    def delete(self, ref: str) -> Card:
        """Delete one version, named explicitly (``name:V``). Refused while an alias or a canary points at it
        (``AliasedVersion``) or a running replica's live lease holds it (``VersionHeld``)."""
        parsed = parse_reference(ref)
        if parsed.version is None:
            raise InvalidName(f"delete needs an explicit version (name:V), got {ref!r}")
        require_numbers(self.root, parsed.name)
        with model_lock(self.root, parsed.name):
            card = self.card(parsed.name, parsed.version)  # under the lock: what is checked is what is removed
            table = read_aliases(self.root / card.name)
            holders = sorted(a for a, v in table.aliases.items() if v == card.version)
            holders += sorted(f"{a}'s canary" for a, c in table.canaries.items() if c.version == card.version)
            if holders:
                raise AliasedVersion(f"{card.ref} is aliased as {', '.join(holders)}: move the alias first")
            leases = self.leases.holders(card.ref)
            if leases:
                raise VersionHeld(
                    f"{describe_holders(card.ref, leases)}; refusing to delete it: it is unloaded there once no "
                    "alias or canary names it (a killed replica's lease expires by itself)"
                )
            self._remove_version(card.name, card.version)
        log.info("deleted %s", card.ref)
        return card

    def gc(self, name: str) -> list[str]:
        """Remove every unaliased version except the latest, and leftovers of killed publishes and deletes.

        Returns what was removed (``name:V`` for versions, the directory name for leftovers). A staging
        directory is removed only when its publisher is gone (its lock can be taken). A version a running
        replica holds (``held``) is kept, for a later gc.
        """
        require_numbers(self.root, name)
        removed: list[str] = []
        with model_lock(self.root, name):
            numbers = require_numbers(self.root, name)  # under the lock: a publish meanwhile is the latest
            keep = read_aliases(self.root / name).aliased_versions() | {numbers[-1]} | set(self.held(name))
            for version in numbers:
                if version not in keep:
                    self._remove_version(name, version)
                    removed.append(f"{name}:{version}")
            removed += remove_leftovers(self.root / name)
        self.leases.remove_expired(older_than_s=_EXPIRED_LEASE_KEPT_S)
        return removed

    def _remove_version(self, name: str, version: int) -> None:
        """Under the lock: make ``version`` invisible with one rename, then delete its files."""
        model_dir = self.root / name
        # The counter keeps the number from being reused even if this was the latest version.
        write_text_atomic(model_dir / _COUNTER_FILE, f"{max(version, _read_counter(model_dir))}\n")
        trash = model_dir / f".trash-{version}-{uuid.uuid4().hex}"
        os.rename(model_dir / str(version), trash)
        fsync_dir(model_dir)
        shutil.rmtree(trash)


def _checked_weights(
    name: str, state: Mapping[str, np.ndarray], config: ViTConfig, labels: Sequence[str], aliases: Sequence[str]
) -> StateDict:
    """Refuse a publish before anything is written: bad names, labels that do not fit or hold a control
    character, mis-shaped weights."""
    validate_name(name)
    for alias in aliases:
        validate_name(alias, "alias")
    if config.num_classes and len(labels) != config.num_classes:
        raise ValueError(f"{name}: {len(labels)} labels for a head of {config.num_classes} classes")
    try:
        check_labels([str(label) for label in labels])
    except ValueError as err:
        raise InvalidCard(f"cannot publish {name}: {err}") from err
    weights = {k: np.asarray(v) for k, v in state.items()}
    try:
        check_weights(weights, config)
    except ValueError as err:
        raise IntegrityError(f"cannot publish {name}: {err}") from err
    return weights


def _read_counter(model_dir: Path) -> int:
    try:
        return int((model_dir / _COUNTER_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return 0


__all__ = ["DEFAULT_ROOT", "PAUSE_ENV", "ROOT_ENV", "ModelStore", "default_root"]
