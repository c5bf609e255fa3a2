"""Request and response bodies of the HTTP API (they are also its OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ImageRef(BaseModel):
    """One image by URL or as base64 (exactly one of the two)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, max_length=4096, description="http(s) URL, fetched under the URL policy")
    image_base64: str | None = Field(None, description="the encoded image file, base64 (standard or data: URL)")

    @model_validator(mode="after")
    def _one_source(self) -> ImageRef:
        if (self.url is None) == (self.image_base64 is None):
            raise ValueError("give exactly one of url or image_base64")
        return self


class ClassifyJSON(BaseModel):
    """JSON form of ``POST /classify``: one image (``url`` or ``image_base64``) or ``images``."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, max_length=4096)
    image_base64: str | None = None
    images: list[ImageRef] | None = None
    top_k: int | None = Field(None, ge=1, description="labels per image (default 5, at most the class count)")
    model: str | None = Field(None, description="name, name:version or name@alias (default: the served default)")

    @model_validator(mode="after")
    def _one_form(self) -> ClassifyJSON:
        given = sum(x is not None for x in (self.url, self.image_base64, self.images))
        if given != 1:
            raise ValueError("give exactly one of url, image_base64 or images")
        return self

    def refs(self) -> list[ImageRef]:
        if self.images is not None:
            return self.images
        return [ImageRef(url=self.url, image_base64=self.image_base64)]


class Prediction(BaseModel):
    label: str
    index: int
    score: float = Field(description="softmax probability")


class Timings(BaseModel):
    """Milliseconds per stage for one image (fetch only for URL inputs)."""

    fetch_ms: float | None = None
    decode_ms: float
    queue_ms: float
    infer_ms: float
    batch_size: int = Field(description="images in the model call this image was part of (0: from the cache)")
    cache: Literal["hit", "shared"] | None = Field(
        default=None,
        description="only for models with the duplicate-image cache: hit (answered from the cache, no model call) "
        "or shared (an identical image in flight was inferred once for both; its timings)",
        exclude_if=lambda value: value is None,  # absent unless the cache answered: older clients never see it
    )


class Result(BaseModel):
    predictions: list[Prediction]
    timings: Timings


class ModelRef(BaseModel):
    name: str
    version: int


class ClassifyResponse(BaseModel):
    model: ModelRef
    results: list[Result] = Field(description="one per input image, in input order")
    total_ms: float


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class VersionInfo(BaseModel):
    version: int
    aliases: list[str]
    loaded: bool
    serving: bool
    ready: bool
    pinned: bool = False  # loaded explicitly (POST /admin/models/{ref}/load): stays until an explicit unload
    load_error: str | None = None
    # Many models on one replica (README "Many models on one replica"): this replica's figures for the version.
    residency: Literal["resident", "loading", "draining", "cold"] = Field(
        "cold", description="resident (loaded), loading, draining (unloading) or cold (in the store only)"
    )
    on_demand: bool = Field(False, description="loaded by a request; evicted (least recently used first) for room")
    memory_bytes: int | None = Field(None, description="resident memory measured at its last load here")
    cold_start_s: float | None = Field(None, description="build and warm-up time of its last load here")
    last_used: str | None = Field(None, description="when a request was last routed to it (UTC)")
    hits: int = Field(0, description="requests routed to it while it was resident")
    misses: int = Field(0, description="requests that waited for it to load")
    hit_rate: float | None = Field(None, description="hits / (hits + misses); null before any request")
    metrics: dict[str, dict[str, float]]
    created_at: str
    description: str
    num_classes: int
    img_size: int


class CanaryInfo(BaseModel):
    """A name's canary split on this replica, and each side's outcomes since the split began."""

    alias: str
    stable_version: int
    canary_version: int
    weight: float = Field(description="percent of the name's requests sent to the canary")
    sticky_header: str | None = Field(None, description="the request header that keeps a client on one side")
    stats: dict[str, dict[str, float | int | None]] = Field(
        description="'name:V' → requests, errors, error_rate, p99_ms since the split began"
    )


class SyncInfo(BaseModel):
    """How this replica follows the store for a name."""

    replica: str
    followed: str | None = Field(description="the reference followed; null when pinned to a version")
    target_version: int | None = Field(description="the version the store names")
    target_canary: int | None = None
    in_sync: bool
    error: str | None = Field(None, description="why the last attempt to follow the store failed")
    retry_in_s: float | None = None
    guard_abort: str | None = Field(None, description="why this replica's canary guard last aborted a canary")


class ModelInfo(BaseModel):
    name: str
    serving_version: int | None
    aliases: dict[str, int]
    versions: list[VersionInfo]
    canary: CanaryInfo | None = None
    sync: SyncInfo | None = None
    # In GET /models: why this model's cards or aliases cannot be read (then versions and aliases are empty);
    # the other models still list.
    error: str | None = None


class MemoryInfo(BaseModel):
    """This replica's memory budget for loaded versions (``MEMORY_BUDGET``) and what they take of it."""

    budget_bytes: int
    used_bytes: int = Field(description="the loaded versions' measured memory, together")
    process_rss_bytes: int = Field(description="the whole process's resident memory now")
    on_demand_models: list[str] = Field(description="models a request may load on demand ('*': every model)")
    evictable: list[str] = Field(description="versions loaded on demand, least recently used first")


class ModelList(BaseModel):
    models: list[ModelInfo]
    memory: MemoryInfo | None = None
    # {"reachable": true}, or while store calls time out {"reachable": false, "unreachable_since", "detail"}: the
    # list then holds only what this replica has loaded.
    store: dict[str, Any] | None = None


class AliasRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    force: bool = False  # skip the eval gate of "production"
    dataset: str | None = None  # the validation set the gate compares on


class CanaryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    weight: float = Field(gt=0, lt=100, description="percent of the alias's requests sent to the canary")


class CanaryPromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    force: bool = False  # skip the eval gate of "production"
    dataset: str | None = None  # the validation set the gate compares on


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias: str = "production"


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "undecodable image, bad base64, URL refused or unreachable",
        404: "unknown or not loaded model/version",
        413: "too many bytes or pixels",
        415: "unsupported image or request type",
        422: "invalid fields",
        429: "this client is over its request rate or its decoding share (Retry-After)",
        503: "queue full, not ready, shutting down, a version still loading on demand or one that does not fit "
        "the memory budget (Retry-After)",
        504: "the request's deadline passed",
    }.items()
}
