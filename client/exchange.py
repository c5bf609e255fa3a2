"""The client without I/O: what ``Client`` and ``AsyncClient`` do alike, written once.

Each call (``Calls.classify``, ``Calls.models``, ...) is a generator that builds its requests, interprets the
answers, maps errors and decides on retries, and yields each piece of I/O it needs for its face
to perform: an ``httpx.Request`` to send (the reply: its ``httpx.Response``, or the ``httpx.TransportError``
sending raised, as a value), a ``Sleep`` (reply ``None``) or a ``ReadImages`` (reply: what its ``read()``
returns). The generator's return value is the call's result. ``sync.py`` sends and sleeps blocking,
``aio.py`` awaiting; nothing else differs between them.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypedDict, TypeVar
from urllib.parse import quote

import httpx

from vitserve.client.errors import ConnectionFailed, Unavailable, error_for, retry_after_s
from vitserve.client.images import ImageSource, image_sources, read_images
from vitserve.client.results import Classification, ModelInfo

T = TypeVar("T")

# The store's model-name grammar (model_store/reference.py ``NAME_PATTERN``), mirrored: the client imports
# nothing of the server. It admits no "/", "?", "#", "%" and no leading ".", so a name is one path segment.
MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


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


class ClientOptions(TypedDict, total=False):
    """What ``Client`` and ``AsyncClient`` take beside ``base_url`` and ``transport``, all optional."""

    timeout_s: float  # bounds each HTTP exchange (30 s when not given)
    retry: RetryPolicy | None  # how 503s are retried (``RetryPolicy()`` when not given)
    headers: dict[str, str] | None  # sent with every request (e.g. ``X-Request-Id``)


class ClassifyOptions(TypedDict, total=False):
    """What ``classify`` takes beside the images, all optional; ``None`` leaves it to the server."""

    top_k: int | None  # labels per image
    model: str | None  # name, name:version or name@alias (the server's default model when not given)
    timeout_s: float | None  # the request's deadline on the server


def refuse_unknown(options: Mapping[str, Any], known: type[Any], call: str) -> None:
    """``TypeError`` for a keyword ``known`` (a ``TypedDict``) lacks, as Python raises for a named parameter:
    ``**options`` would otherwise take a misspelt ``topk=`` silently."""
    unknown = sorted(set(options) - set(known.__annotations__))
    if unknown:
        raise TypeError(f"unexpected keyword arguments {unknown} for {call}; known: {sorted(known.__annotations__)}")


def http_settings(base_url: str, options: ClientOptions) -> dict[str, Any]:
    """Keyword arguments for the face's ``httpx.Client`` or ``httpx.AsyncClient``."""
    refuse_unknown(options, ClientOptions, "Client() and AsyncClient()")
    return {
        "base_url": base_url.rstrip("/"),
        "timeout": options.get("timeout_s", 30.0),
        "headers": options.get("headers"),
    }


@dataclass(frozen=True)
class Sleep:
    """Wait ``seconds`` before going on (between retries)."""

    seconds: float


@dataclass(frozen=True)
class ReadImages:
    """Read the image files among ``sources``: blocking file I/O, which an async face runs off its loop."""

    sources: list[ImageSource]

    def read(self) -> list[bytes | str]:
        return read_images(self.sources)


Step: TypeAlias = httpx.Request | Sleep | ReadImages
Call: TypeAlias = Generator[Step, Any, T]  # yields steps, is sent each step's reply, returns the result
Build: TypeAlias = Callable[..., httpx.Request]  # httpx's ``build_request``: base URL, headers, timeout merged


def model_path(name: str) -> str:
    """``/models/{name}``; ``ValueError`` for a string that is not a model name, so no name can change the route."""
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
        raise ValueError(f"invalid model name {name!r}: use 1-64 of a-z 0-9 . _ - starting with a letter or digit")
    return f"/models/{quote(name, safe='')}"  # a no-op for the grammar above; kept should the grammar widen


def classify_request(images: Sequence[bytes | str], options: ClassifyOptions) -> dict[str, Any]:
    """``httpx`` keyword arguments for ``POST /classify``: multipart for files alone, JSON when URLs are mixed in
    (files then travel base64-encoded)."""
    params: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
    if all(isinstance(image, bytes) for image in images):
        files = [("file", (f"image{i}", image, "application/octet-stream")) for i, image in enumerate(images)]
        return {"params": params, "files": files}
    refs = [
        {"url": image} if isinstance(image, str) else {"image_base64": base64.b64encode(image).decode()}
        for image in images
    ]
    return {"params": params, "json": {"images": refs}}


def checked(response: httpx.Response) -> Any:
    """The JSON body of a 2xx response; the typed error otherwise."""
    if response.is_success:
        return response.json()
    raise error_for(response)


def connection_failed(err: httpx.TransportError, url: str) -> ConnectionFailed:
    return ConnectionFailed(f"{type(err).__name__} talking to {url}: {err}", code="connection_failed")


class Calls:
    """The client's calls as generators (see the module's docstring), for a face's ``http`` client, of which only
    ``build_request`` (no I/O: base URL, headers and timeout merged) and ``base_url`` are used."""

    def __init__(self, http: httpx.Client | httpx.AsyncClient, options: ClientOptions) -> None:
        self._build: Build = http.build_request
        self.base_url = str(http.base_url).rstrip("/")
        self.retry = options.get("retry") or RetryPolicy()

    def classify(self, images: ImageSource | Sequence[ImageSource], options: ClassifyOptions) -> Call[Classification]:
        refuse_unknown(options, ClassifyOptions, "classify()")
        sources = image_sources(images)  # every source checked before any file is read
        data = yield ReadImages(sources)
        kwargs = classify_request(data, options)
        return Classification.from_json((yield from self._exchange("POST", "/classify", **kwargs)))

    def models(self) -> Call[list[ModelInfo]]:
        body = yield from self._exchange("GET", "/models")
        return [ModelInfo.from_json(m) for m in body["models"]]

    def model(self, name: str) -> Call[ModelInfo]:
        return ModelInfo.from_json((yield from self._exchange("GET", model_path(name))))

    def ready(self) -> Call[bool]:
        """Never raises for a 503, nor retries it: a not-ready server is an answer here."""
        response = yield from self._send(self._build("GET", "/readyz"))
        return response.status_code == 200

    def _exchange(self, method: str, path: str, **kwargs: Any) -> Call[Any]:
        """The JSON body of a 2xx answer to ``method path``, 503s retried as ``retry`` says; the typed error."""
        attempt = 0
        while True:
            response = yield from self._send(self._build(method, path, **kwargs))  # a fresh request each try
            delay = self.retry.delay_s(response, attempt)
            if delay is None:
                return checked(response)
            attempt += 1
            yield Sleep(delay)

    def _send(self, request: httpx.Request) -> Call[httpx.Response]:
        reply = yield request
        if isinstance(reply, httpx.TransportError):
            raise connection_failed(reply, self.base_url) from reply
        return reply
