"""What a fleet of replicas sharing the store reads and writes in it: a cheap generation to poll, canaries
behind aliases, and which versions running replicas hold. Part of ``ModelStore`` (a base class, so that the
store's layout stays in this package and ``store.py`` stays readable)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from vitserve.model_store.aliases import Canary, read_aliases, write_aliases
from vitserve.model_store.errors import ModelNotFound, StoreError
from vitserve.model_store.leases import LeaseBook
from vitserve.model_store.reference import validate_name

if TYPE_CHECKING:
    from vitserve.model_store.card import Card

log = logging.getLogger(__name__)


class FleetRecords:
    """Canaries, the generation and the held versions; ``ModelStore`` provides the rest."""

    root: Path
    leases: LeaseBook

    if TYPE_CHECKING:

        def card(self, name: str, version: int) -> Card: ...

        def set_alias(
            self, name: str, alias: str, version: int, *, force: bool = False, dataset: str | None = None
        ) -> Card: ...

        def _locked(self, name: str) -> contextlib.AbstractContextManager[None]: ...

    def generation(self, name: str) -> tuple[int, ...]:
        """A cheap fingerprint of ``name``'s versions and aliases, for replicas that poll the store.

        It changes when a version is published or deleted (a rename in the model's directory changes the
        directory's mtime) and when the alias table is replaced (a new inode). Stat calls only, no reads.
        Polling is the one watch that works on every shared filesystem: inotify and its kin see only the
        local kernel's writes, never another NFS client's.
        """
        model_dir = self.root / validate_name(name)
        parts: list[int] = []
        for path in (model_dir, model_dir / "aliases.json"):
            try:
                st = path.stat()
            except FileNotFoundError:
                parts += [0, 0, 0]
                continue
            parts += [st.st_ino, st.st_mtime_ns, st.st_size]
        return tuple(parts)

    def canary(self, name: str, alias: str) -> Canary | None:
        """The canary behind ``name@alias``, if it has one."""
        return read_aliases(self.root / validate_name(name)).canaries.get(alias)

    def set_canary(self, name: str, alias: str, version: int, weight: float) -> Canary:
        """Send ``weight`` percent of ``name@alias``'s requests to ``version`` (not gated: it is the trial)."""
        validate_name(alias, "alias")
        if not 0 < weight < 100:
            raise ValueError(f"canary weight must be a percentage between 0 and 100 (exclusive), got {weight}")
        candidate = self.card(name, version)
        with self._locked(name):
            table = read_aliases(self.root / name)
            stable = table.aliases.get(alias)
            if stable is None:
                raise ModelNotFound(f"{name}: no alias {alias!r} to put a canary behind; promote a version first")
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
        canary = self.canary(name, validate_name(alias, "alias"))
        if canary is None:
            raise ModelNotFound(f"{name}@{alias} has no canary")
        if promote:
            self.set_alias(name, alias, canary.version, force=force, dataset=dataset)
            return canary
        with self._locked(name):
            table = read_aliases(self.root / name)
            current = table.canaries.pop(alias, None)
            if current is None:
                raise ModelNotFound(f"{name}@{alias} has no canary")
            if only_version is not None and current.version != only_version:
                raise StoreError(f"{name}@{alias}'s canary is now {current.version}, not {only_version}")
            write_aliases(self.root / name, table)
        log.info("%s@%s canary %d aborted", name, alias, current.version)
        return current

    def held(self, name: str) -> dict[int, list[str]]:
        """Versions of ``name`` that live leases hold → the replicas holding them."""
        held: dict[int, list[str]] = {}
        for lease in self.leases.live():
            for ref in lease.holds:
                model, _, version = ref.partition(":")
                if model == name and version.isdigit():
                    held.setdefault(int(version), []).append(lease.replica)
        return held
