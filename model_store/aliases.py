"""``<root>/<name>/aliases.json``: alias → version, plus each alias's earlier versions for rollback.

On disk: ``{"aliases": {"production": 3}, "history": {"production": [1, 2]}}``. Callers hold the model's
lock while they read, change and write it; the write itself is atomic (temp file + ``os.replace``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from vitserve.model_store.errors import IntegrityError
from vitserve.vit.files import write_text_atomic

ALIASES_FILE = "aliases.json"


@dataclass
class AliasTable:
    aliases: dict[str, int] = field(default_factory=dict)
    history: dict[str, list[int]] = field(default_factory=dict)  # oldest first; the current value is not in it

    def point(self, alias: str, version: int) -> None:
        """Move ``alias`` to ``version``, remembering where it pointed before."""
        previous = self.aliases.get(alias)
        if previous is not None and previous != version:
            self.history.setdefault(alias, []).append(previous)
        self.aliases[alias] = version

    def aliased_versions(self) -> set[int]:
        return set(self.aliases.values())


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
    except (AttributeError, TypeError, ValueError) as err:
        raise IntegrityError(f"{model_dir.name}: malformed {ALIASES_FILE}: {err}") from err
    return AliasTable(aliases, history)


def write_aliases(model_dir: Path, table: AliasTable) -> None:
    history = {alias: versions for alias, versions in table.history.items() if versions}
    text = json.dumps({"aliases": table.aliases, "history": history}, indent=2, sort_keys=True) + "\n"
    write_text_atomic(model_dir / ALIASES_FILE, text)
