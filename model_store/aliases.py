"""``<root>/<name>/aliases.json``: alias → version, each alias's earlier versions for rollback, and canaries;
and ``AliasRecords``, the store's moves on it (point, remove, roll back an alias; set and end a canary).

On disk: ``{"aliases": {"production": 3}, "history": {"production": [1, 2]},
"canaries": {"production": {"version": 4, "weight": 10.0}}}`` (a canary sends ``weight`` percent of the
alias's requests to its version; the alias itself still names the stable version). Callers hold the model's
lock (``versions.model_lock``) while they read it, check the versions it will name and write it; the write
itself is atomic (temp file + ``os.replace``), so a replica polling the file sees the old table or the new one.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vitserve.model_store.card import Card
from vitserve.model_store.errors import IntegrityError, ModelNotFound, StoreError
from vitserve.model_store.promotion import GATED_ALIAS, check_promotion
from vitserve.model_store.reference import validate_name
from vitserve.model_store.versions import model_lock, read_version_card, require_numbers, version_numbers
from vitserve.vit.files import write_text_atomic

log = logging.getLogger(__name__)

ALIASES_FILE = "aliases.json"


@dataclass(frozen=True)
class Canary:
    """A second version behind an alias, taking ``weight`` percent (0 < weight < 100) of its requests."""

    version: int
    weight: float

    def to_dict(self) -> dict[str, float | int]:
        return {"version": self.version, "weight": self.weight}


@dataclass
class AliasTable:
    aliases: dict[str, int] = field(default_factory=dict)
    history: dict[str, list[int]] = field(default_factory=dict)  # oldest first; the current value is not in it
    canaries: dict[str, Canary] = field(default_factory=dict)  # alias → its canary, if it has one

    def point(self, alias: str, version: int) -> None:
        """Move ``alias`` to ``version``, remembering where it pointed before."""
        previous = self.aliases.get(alias)
        if previous is not None and previous != version:
            self.history.setdefault(alias, []).append(previous)
        self.aliases[alias] = version

    def aliased_versions(self) -> set[int]:
        """Versions an alias or a canary points at (delete and gc keep them)."""
        return set(self.aliases.values()) | {c.version for c in self.canaries.values()}


def read_aliases(model_dir: Path) -> AliasTable:
    path = model_dir / ALIASES_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return AliasTable()
    except (OSError, ValueError) as err:
        raise IntegrityError(f"{model_dir.name}: cannot read {ALIASES_FILE}: {err}") from err
    try:
        aliases = {str(k): int(v) for k, v in raw.get("aliases", {}).items()}
        history = {str(k): [int(v) for v in vs] for k, vs in raw.get("history", {}).items()}
        canaries = {str(k): Canary(int(c["version"]), float(c["weight"])) for k, c in raw.get("canaries", {}).items()}
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise IntegrityError(f"{model_dir.name}: malformed {ALIASES_FILE}: {err}") from err
    return AliasTable(aliases, history, canaries)


def write_aliases(model_dir: Path, table: AliasTable) -> None:
    history = {alias: versions for alias, versions in table.history.items() if versions}
    raw: dict[str, object] = {"aliases": table.aliases, "history": history}
    if table.canaries:
        raw["canaries"] = {alias: canary.to_dict() for alias, canary in table.canaries.items()}
    text = json.dumps(raw, indent=2, sort_keys=True) + "\n"
    write_text_atomic(model_dir / ALIASES_FILE, text)


def production_card(root: Path, name: str, table: AliasTable) -> Card | None:
    """The card of the version ``production`` names in ``table``, if any: what a promotion is gated against."""
    version = table.aliases.get(GATED_ALIAS)
    return None if version is None else read_version_card(root, name, version)


class AliasRecords:
    """The alias and canary moves of ``ModelStore`` (a base class). Each one holds the model's lock from its
    first check (does the version exist, the eval gate, is there a canary) to its write, so that gc and delete,
    which remove versions under the same lock, never leave an alias or a canary naming a removed version."""

    root: Path

    def aliases(self, name: str) -> dict[str, int]:
        validate_name(name)
        return dict(read_aliases(self.root / name).aliases)

    def set_alias(
        self, name: str, alias: str, version: int, *, force: bool = False, dataset: str | None = None
    ) -> Card:
        """Point ``name@alias`` at ``version``. For ``production`` the move is eval-gated (see
        ``model_store.promotion.check_promotion``; ``dataset`` names the validation set) unless ``force``."""
        validate_name(alias, "alias")
        with self._model_locked(name):
            table = read_aliases(self.root / name)
            candidate = self._point(name, table, alias, version, force=force, dataset=dataset)
            write_aliases(self.root / name, table)
        log.info("%s@%s → %d", name, alias, candidate.version)
        return candidate

    def remove_alias(self, name: str, alias: str) -> None:
        with self._model_locked(name):
            table = read_aliases(self.root / name)
            if alias not in table.aliases:
                raise ModelNotFound(f"{name}: no alias {alias!r}")
            del table.aliases[alias]
            write_aliases(self.root / name, table)

    def rollback(self, name: str, alias: str = GATED_ALIAS) -> Card:
        """Point ``alias`` back at the version it named before its last move (not gated: a recovery action)."""
        validate_name(alias, "alias")
        with self._model_locked(name):
            table = read_aliases(self.root / name)
            current = table.aliases.get(alias)
            history = table.history.get(alias, [])
            existing = set(version_numbers(self.root, name))
            while history and (history[-1] not in existing or history[-1] == current):
                history.pop()  # skip versions deleted since
            if not history:
                raise StoreError(f"{name}@{alias}: no earlier version to roll back to (now {current})")
            target = read_version_card(self.root, name, history.pop())
            table.aliases[alias] = target.version
            table.canaries.pop(alias, None)  # a rollback is a recovery: no trial traffic either
            write_aliases(self.root / name, table)
        log.info("%s@%s rolled back %s → %d", name, alias, current, target.version)
        return target

    def canary(self, name: str, alias: str) -> Canary | None:
        """The canary behind ``name@alias``, if it has one."""
        return read_aliases(self.root / validate_name(name)).canaries.get(alias)

    def set_canary(self, name: str, alias: str, version: int, weight: float) -> Canary:
        """Send ``weight`` percent of ``name@alias``'s requests to ``version`` (not gated: it is the trial)."""
        validate_name(alias, "alias")
        if not 0 < weight < 100:
            raise ValueError(f"canary weight must be a percentage between 0 and 100 (exclusive), got {weight}")
        with self._model_locked(name):
            table = read_aliases(self.root / name)
            stable = table.aliases.get(alias)
            if stable is None:
                raise ModelNotFound(f"{name}: no alias {alias!r} to put a canary behind; promote a version first")
            candidate = read_version_card(self.root, name, version)
            if stable == candidate.version:
                raise StoreError(f"{name}@{alias} already points at {version}: a canary needs another version")
            canary = table.canaries[alias] = Canary(candidate.version, float(weight))
            write_aliases(self.root / name, table)
        log.info("%s@%s canary → %d at %.1f %%", name, alias, version, weight)
        return canary

    def end_canary(
        self,
        name: str,
        alias: str,
        *,
        promote: bool,
        force: bool = False,
        dataset: str | None = None,
        only_version: int | None = None,
    ) -> Canary:
        """End ``name@alias``'s canary: ``promote`` points the alias at its version (eval-gated for production,
        as ``set_alias``), else it is aborted and every request goes back to the alias's version. With
        ``only_version``, a canary of another version (set meanwhile) is left alone (``StoreError``)."""
        validate_name(alias, "alias")
        with self._model_locked(name):
            table = read_aliases(self.root / name)
            canary = table.canaries.get(alias)
            if canary is None:
                raise ModelNotFound(f"{name}@{alias} has no canary")
            if only_version is not None and canary.version != only_version:
                raise StoreError(f"{name}@{alias}'s canary is now {canary.version}, not {only_version}")
            if promote:
                self._point(name, table, alias, canary.version, force=force, dataset=dataset)
            else:
                del table.canaries[alias]
            write_aliases(self.root / name, table)
        log.info("%s@%s canary %d %s", name, alias, canary.version, "promoted" if promote else "aborted")
        return canary

    def _point(
        self, name: str, table: AliasTable, alias: str, version: int, *, force: bool, dataset: str | None
    ) -> Card:
        """Under the model lock: check that ``version`` exists and passes the gate, then point ``alias`` in
        ``table`` at it (ending the alias's canary if it is that version). The caller writes the table."""
        candidate = read_version_card(self.root, name, version)
        if alias == GATED_ALIAS and not force:
            check_promotion(candidate, production_card(self.root, name, table), dataset)
        table.point(alias, candidate.version)
        canary = table.canaries.get(alias)
        if canary is not None and canary.version == candidate.version:
            del table.canaries[alias]  # promoting the canary's version ends the canary
        return candidate

    @contextlib.contextmanager
    def _model_locked(self, name: str) -> Iterator[None]:
        """The model's lock; ``ModelNotFound`` first if ``name`` has no version (there is nothing to move)."""
        require_numbers(self.root, name)
        with model_lock(self.root, name):
            yield
