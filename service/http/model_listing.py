"""One model's entry in ``GET /models``, where a model whose files are broken must not hide the others, and the
public form of the free text that ``/models`` and ``/readyz`` carry (no server path in it)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from vitserve.model_store.errors import StoreError
from vitserve.service.core.errors import describe, without_paths
from vitserve.service.core.schemas import ModelInfo
from vitserve.service.lifecycle.versions import VersionRegistry

log = logging.getLogger(__name__)


async def listed_model(
    registry: VersionRegistry, name: str, info: Callable[[VersionRegistry, str], Awaitable[ModelInfo]]
) -> ModelInfo:
    """``info(registry, name)``, or, when the model's card or alias files cannot be read, an entry with no
    versions whose ``error`` says so (paths cut; the full reason goes to the server log)."""
    try:
        return await info(registry, name)
    except StoreError as err:
        log.warning("GET /models: model %r is broken: %s", name, err)
        code, _, message = describe(err)
        serving = registry.serving.get(name)
        return ModelInfo(
            name=name,
            serving_version=int(serving.split(":")[1]) if serving else None,
            aliases={},
            versions=[],
            error=f"{code}: {message}",
        )


def public_text(text: str | None) -> str | None:
    """A reason kept for the server (a load failure, a start-up or sync error) as a public body may show it: every
    absolute path cut to its last component. The full text is in the server log where the error was logged."""
    return None if text is None else without_paths(text)


def public_fleet_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """``fleet_fields``' ``canary`` and ``sync`` with the sync's free text (``error``, ``guard_abort``) public."""
    sync = fields.get("sync")
    if sync is None:
        return fields
    texts = {"error": public_text(sync.error), "guard_abort": public_text(sync.guard_abort)}
    return {**fields, "sync": sync.model_copy(update=texts)}
