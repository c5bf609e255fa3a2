"""Client side of the service's admin upload route (the "Admin upload API" in contracts.md)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from vitserve.admin.errors import CommandError
from vitserve.vit.config import DataConfig, ViTConfig

TIMEOUT_S = 600.0  # a ViT-L upload is over a gigabyte; the server verifies before it answers


def upload(
    url: str,
    token: str,
    name: str,
    ckpt: Path,
    config: ViTConfig,
    data: DataConfig,
    labels: Sequence[str],
    *,
    description: str = "",
    aliases: Sequence[str] = (),
) -> dict[str, Any]:
    """POST ``ckpt`` to ``{url}/admin/models/{name}/versions`` as multipart, with a progress bar; the reply JSON."""
    import json

    endpoint = f"{url.rstrip('/')}/admin/models/{name}/versions"
    fields: dict[str, Any] = {
        "config": config.to_json(),
        "data": json.dumps(data.to_dict()),
        "labels": json.dumps(list(labels)),
        "description": description,
    }
    if aliases:
        fields["alias"] = list(aliases)
    size = ckpt.stat().st_size
    with (
        open(ckpt, "rb") as raw,
        tqdm.wrapattr(raw, "read", total=size, desc=f"upload {ckpt.name}", file=sys.stderr) as handle,
    ):
        try:
            reply = httpx.post(
                endpoint,
                headers={"Authorization": f"Bearer {token}"},
                data=fields,
                files={"checkpoint": (ckpt.name, handle, "application/octet-stream")},
                timeout=TIMEOUT_S,
            )
        except httpx.HTTPError as err:
            raise CommandError(f"upload to {endpoint} failed: {err}") from err
    if reply.status_code >= 400:
        raise CommandError(f"upload to {endpoint} refused: HTTP {reply.status_code}: {_error_text(reply)}")
    try:
        body: dict[str, Any] = reply.json()
    except ValueError:
        raise CommandError(f"upload to {endpoint}: the reply is not JSON: {reply.text[:200]!r}") from None
    return body


def _error_text(reply: httpx.Response) -> str:
    try:
        error = reply.json().get("error", {})
        return f"{error.get('code')}: {error.get('message')}"
    except (ValueError, AttributeError):
        return reply.text[:200]
