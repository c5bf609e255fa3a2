"""``<root>/<name>/aliases.json``: alias → version, each alias's earlier versions for rollback, and canaries.

On disk: ``{"aliases": {"production": 3}, "history": {"production": [1, 2]},
"canaries": {"production": {"version": 4, "weight": 10.0}}}`` (a canary sends ``weight`` percent of the
alias's requests to its version; the alias itself still names the stable version). Callers hold the model's
lock while they read, change and write it; the write itself is atomic (temp file + ``os.replace``), so a
replica polling the file sees the old table or the new one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from vitserve.model_store.errors import IntegrityError
from vitserve.vit.files import write_text_atomic

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
