"""One model's entry in ``GET /models``, where a model whose files are broken must not hide the others."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from vitserve.model_store.errors import StoreError
from vitserve.service.core.errors import describe
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
