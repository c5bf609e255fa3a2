"""Model references: ``name`` (production, else latest), ``name:7`` and ``name@staging``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from vitserve.model_store.errors import InvalidName

# Names become directory names: lower case, no separators, no leading dot (so no traversal, no hidden dirs).
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# ASCII digits only ("²".isdigit() is true, and int("²") raises), and few enough for int() to take.
VERSION_PATTERN = re.compile(r"[0-9]{1,18}")


def validate_name(name: str, what: str = "model name") -> str:
    """Return ``name`` unchanged, or raise ``InvalidName`` saying which characters are allowed."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidName(f"invalid {what} {name!r}: use 1-64 of a-z 0-9 . _ - starting with a letter or digit")
    return name


@dataclass(frozen=True)
class Reference:
    """A parsed reference; at most one of ``version`` and ``alias`` is set."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def parse_reference(ref: str) -> Reference:
    """``"vit"`` → Reference("vit"); ``"vit:3"`` → version 3; ``"vit@staging"`` → alias "staging"."""
    if not isinstance(ref, str) or not ref:
        raise InvalidName(f"invalid model reference {ref!r}")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return Reference(validate_name(name), alias=validate_name(alias, "alias"))
    if ":" in ref:
        name, version = ref.split(":", 1)
        if not VERSION_PATTERN.fullmatch(version) or int(version) < 1:
            raise InvalidName(f"invalid model reference {ref!r}: the version after ':' must be a positive integer")
        return Reference(validate_name(name), version=int(version))
    return Reference(validate_name(ref))
