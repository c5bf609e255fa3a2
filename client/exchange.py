"""What the sync and async clients share: building requests, reading answers, and the retry policy."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from vitserve.client.errors import ConnectionFailed, Unavailable, error_for, retry_after_s

# An image: a local path, the encoded file's bytes, or an http(s) URL the server fetches.
ImageSource = str | Path | bytes


def is_url(source: ImageSource) -> bool:
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


def as_sources(images: ImageSource | Sequence[ImageSource]) -> list[ImageSource]:
    """One image or several, as a list."""
    if isinstance(images, str | bytes | Path):
        return [images]
    return list(images)


def read_source(source: ImageSource) -> bytes | str:
    """Bytes for a file or bytes; the URL itself for a URL. Raises ``OSError`` for an unreadable file."""
    if isinstance(source, bytes):
        return source
    if is_url(source):
        return str(source)
    return Path(source).read_bytes()


def classify_request(
    images: Sequence[bytes | str], *, top_k: int | None, model: str | None, timeout_s: float | None
) -> dict[str, Any]:
    """``httpx`` keyword arguments for ``POST /classify``: multipart for files alone, JSON when URLs are mixed in
    (files then travel base64-encoded)."""
    given = (("top_k", top_k), ("model", model), ("timeout_s", timeout_s))
    params: dict[str, Any] = {k: v for k, v in given if v is not None}
    if all(isinstance(image, bytes) for image in images):
        files = [("file", (f"image{i}", image, "application/octet-stream")) for i, image in enumerate(images)]
        return {"params": params, "files": files}
    refs = [
        {"url": image} if isinstance(image, str) else {"image_base64": base64.b64encode(image).decode()}
        for image in images
    ]
    return {"params": params, "json": {"images": refs}}


@dataclass(frozen=True)
class RetryPolicy:
    """Retry a 503 up to ``retries`` times, waiting what its Retry-After says (else ``backoff_s`` doubling),
    never longer than ``max_wait_s`` at once."""

    retries: int = 3
    backoff_s: float = 0.5
    max_wait_s: float = 10.0

    def delay_s(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or ``None``: do not retry."""
        if response.status_code != Unavailable.status or attempt >= self.retries:
            return None
        after = retry_after_s(response)
        return min(self.max_wait_s, after if after is not None else self.backoff_s * 2**attempt)


def checked(response: httpx.Response) -> Any:
    """The JSON body of a 2xx response; the typed error otherwise."""
    if response.is_success:
        return response.json()
    raise error_for(response)


def connection_failed(err: httpx.TransportError, url: str) -> ConnectionFailed:
    return ConnectionFailed(f"{type(err).__name__} talking to {url}: {err}", code="connection_failed")
