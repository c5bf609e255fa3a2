"""What the replicas sharing the store poll and hold in it: a cheap generation of a model's versions and aliases,
and which versions running replicas hold. Part of ``ModelStore`` (a base class, so that the store's layout
stays in this package and ``store.py`` stays readable); the canaries are with the aliases (``aliases.py``)."""

from __future__ import annotations

from pathlib import Path

from vitserve.model_store.aliases import ALIASES_FILE
from vitserve.model_store.leases import LeaseBook, split_held
from vitserve.model_store.reference import validate_name


class FleetRecords:
    """The generation and the held versions; ``ModelStore`` provides the rest."""

    root: Path
    leases: LeaseBook

    def generation(self, name: str) -> tuple[int, ...]:
        """A cheap fingerprint of ``name``'s versions and aliases, for replicas that poll the store.

        It changes when a version is published or deleted (a rename in the model's directory changes the
        directory's mtime) and when the alias table is replaced (a new inode). Stat calls only, no reads.
        Polling is the one watch that works on every shared filesystem: inotify and its kin see only the
        local kernel's writes, never another NFS client's.
        """
        model_dir = self.root / validate_name(name)
        parts: list[int] = []
        for path in (model_dir, model_dir / ALIASES_FILE):
            try:
                st = path.stat()
            except FileNotFoundError:
                parts += [0, 0, 0]
                continue
            parts += [st.st_ino, st.st_mtime_ns, st.st_size]
        return tuple(parts)

    def held(self, name: str) -> dict[int, list[str]]:
        """Versions of ``name`` that live leases hold → the replicas holding them."""
        held: dict[int, list[str]] = {}
        for lease in self.leases.live():
            for model, version in filter(None, map(split_held, lease.holds)):  # all valid: parse_lease checked
                if model == name:
                    held.setdefault(version, []).append(lease.replica)
        return held
