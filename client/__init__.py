"""A Python client for a vitserve server: ``Client`` (sync) and ``AsyncClient`` (async), on httpx.

    from pathlib import Path
    from vitserve.client import Client
    with Client("http://127.0.0.1:8000") as client:
        result = client.classify(Path("photo.jpg"), top_k=3)
        print(result.results[0].predictions[0].label)

Images are local files (a ``Path`` or a binary file object), bytes, or http(s) URLs fetched by the server; a
``str`` is only ever a URL, never read as a file name. Errors are typed after the service's
error codes (``NotFound``, ``PayloadTooLarge``, ``Unavailable``, ...); a 503 is retried, bounded, after the
server's Retry-After. Imports only httpx and the standard library: no MindSpore, nothing of the server.
"""

from vitserve.client.aio import AsyncClient
from vitserve.client.errors import (
    BadRequest,
    ClientError,
    Conflict,
    ConnectionFailed,
    DeadlineExceeded,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ServerError,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    VitserveError,
)
from vitserve.client.exchange import RetryPolicy
from vitserve.client.results import Classification, ImageResult, ModelInfo, Prediction, Timings, VersionInfo
from vitserve.client.sync import Client

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Classification",
    "Client",
    "ClientError",
    "Conflict",
    "ConnectionFailed",
    "DeadlineExceeded",
    "ImageResult",
    "InvalidRequest",
    "ModelInfo",
    "NotFound",
    "PayloadTooLarge",
    "Prediction",
    "RetryPolicy",
    "ServerError",
    "Timings",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "VersionInfo",
    "VitserveError",
]
