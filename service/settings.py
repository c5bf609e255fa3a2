"""The service's settings: ``VITSERVE_*`` environment variables (CLI flags override them), validated at start-up.

Every field is documented here once; ``vitserve serve --help`` and the deploy manifests point at these names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from vitserve.runtime.engine import EngineOptions
from vitserve.service.observability.logs import LogFormat

DeviceTarget = Literal["CPU", "GPU", "Ascend"]
EngineKind = Literal["auto", "mindspore", "onnxruntime", "openvino"]
EnginePrecision = Literal["auto", "fp32", "int8", "int8-static", "bf16"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class SettingsError(ValueError):
    """Invalid settings, with every bad field named by its environment variable."""


class Settings(BaseSettings):
    """Service configuration. Environment: ``VITSERVE_<FIELD>`` (upper case)."""

    model_config = SettingsConfigDict(env_prefix="VITSERVE_", frozen=True, extra="forbid")

    host: str = "127.0.0.1"  # bind address; 0.0.0.0 inside a container
    port: int = Field(8000, ge=0, le=65535)  # 0 picks a free port (tests)
    # Open Inference Protocol over gRPC (the REST routes under /v2 are always on): the port on ``host``;
    # unset → no gRPC server; 0 → a free port (tests). Triton and KServe use 8001.
    grpc_port: int | None = Field(None, ge=0, le=65535)
    store_root: Path = Path("store")  # the model store's directory
    default_model: str = "digits-vit"  # reference loaded and served at start-up (name, name:V, name@alias)
    device_target: DeviceTarget = "CPU"
    # auto (runtime/engine.py resolve_kind): on CPU OpenVINO, whose factory hands a version served at int8 to ONNX
    # Runtime; MindSpore when the openvino package is not installed. On GPU/Ascend: MindSpore.
    engine: EngineKind = "auto"
    engine_threads: int | None = Field(None, ge=1)  # intra-op threads of the CPU engines; unset → this process's CPUs
    # CPU engines' arithmetic (MindSpore ignores it): auto → the version's opt-in (its card's serving precision,
    # else fp32); int8 runs on ONNX Runtime under either CPU engine; bf16 is OpenVINO's only (fp32 on a CPU
    # without bf16 instructions). int8-static: OpenVINO on the version's NNCF-quantised IR (made beforehand by
    # `vitserve bench --only precision --precision int8-static`).
    engine_precision: EnginePrecision = "auto"
    max_batch_size: int = Field(8, ge=1, le=256)  # the largest compiled batch; buckets are powers of two up to it
    # How long a batch that is not full may wait for company when the engine is idle, and only while other
    # requests are decoding their images (a lone client never waits). 0: dispatch at once (under load batches
    # still fill, from the requests that queue while the engine runs the previous batch).
    max_delay_ms: float = Field(0.0, ge=0, le=1000)
    # Images waiting per loaded version, and (plus max_batch_size) images admitted at once; beyond → 503.
    queue_size: int = Field(64, ge=1)
    request_timeout_s: float = Field(10.0, gt=0)  # deadline of one request from arrival; past it → 504
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1024)  # request body cap (classify); also the per-image cap
    max_upload_bytes: int = Field(2 * 1024**3, ge=1024)  # admin checkpoint upload body cap
    # Bytes of request bodies (all but /admin) held at once, over every connection; beyond → 503 + Retry-After.
    # Bounds what concurrent bodies take of memory and of the temporary directory (multipart spill files).
    max_bodies_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(40_000_000, ge=1)  # width × height from the header, checked before decoding
    max_images: int = Field(32, ge=1)  # images per classify request
    max_top_k: int = Field(100, ge=1)  # top_k is also bounded by the model's class count
    decode_workers: int = Field(2, ge=1, le=64)  # threads decoding and transforming images
    admin_token: str | None = None  # bearer token for /admin; unset → the admin routes do not exist (404)
    # Hosts that URL inputs may name (exact names or IP literals); empty → any host whose addresses pass the check.
    url_allow_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    url_allow_loopback: bool = False  # let URL inputs reach 127.0.0.0/8 and ::1: tests only, never in production
    url_connect_timeout_s: float = Field(3.0, gt=0)
    url_timeout_s: float = Field(10.0, gt=0)  # whole fetch including redirects
    url_max_redirects: int = Field(3, ge=0, le=10)
    drain_timeout_s: float = Field(20.0, ge=0)  # SIGTERM: how long in-flight work may take to finish
    compile_cache_dir: Path | None = None  # MindSpore compile cache for the start-up model; unset → store/.cache
    warmup: bool = True  # compile every bucket before reporting ready
    log_level: LogLevel = "INFO"
    # Fleet: every replica follows the store (service/lifecycle/follower.py) and leases what it holds.
    store_poll_interval_s: float = Field(2.0, ge=0)  # how often the store is checked for alias changes; 0 → never
    follow_retry_s: float = Field(10.0, gt=0)  # first wait before retrying a version that failed to load (doubles)
    lease_ttl_s: float = Field(30.0, gt=0)  # a replica's lease counts this long after its last renewal
    replica_id: str | None = None  # this replica's name in the store's leases; unset → <hostname>-<pid>
    canary_sticky_header: str | None = None  # a request header whose value keeps a client on one side of a canary
    canary_guard: bool = False  # abort a canary by itself when it does worse than the stable version (below)
    canary_min_requests: int = Field(100, ge=1)  # requests each side needs before the guard judges
    canary_max_error_rate_delta: float = Field(0.05, ge=0, le=1)  # canary error rate - stable's above this → abort
    canary_max_p99_ratio: float = Field(2.0, ge=1)  # canary p99 / stable's above this → abort (≥ 200 successes each)
    # Web pages: the classify page at / and the models page at /ui/models (false → 404; /stats stays).
    ui: bool = True
    # Observability: json → one JSON object per log line (a line per request, with its id); text for a terminal.
    log_format: LogFormat = "json"
    otlp_endpoint: str | None = None  # OTLP/HTTP traces (http://collector:4318/v1/traces); unset → no tracing
    # Hardening: what any one client, hostile or slow, may take of a replica (README "Limits and hardening").
    admin_port: int | None = Field(None, ge=0, le=65535)  # serve /admin only on this port (same host), not on port
    admin_socket: Path | None = None  # serve /admin only on this unix socket, not on port
    client_share: float = Field(0.5, gt=0, le=1)  # fraction of the admission budget one client may hold at once
    # Header a trusted proxy sets to the client's address (e.g. x-forwarded-for: its first entry); unset → the
    # peer address. Never set it without such a proxy: clients could then pick their own identity.
    client_header: str | None = None
    # Rates per client (service/client_budgets.py), token buckets refilled each second; 0 → no limit. Requests
    # (all but probes and /admin) beyond client_rate a second, after a burst of client_burst → 429.
    client_rate: float = Field(50.0, ge=0)
    client_burst: int = Field(100, ge=1)
    # Decoding CPU one client may use: CPU-seconds a second on average (0.25 → a quarter of a core), after a burst
    # of client_decode_burst_s; a client in debt (one huge image costs ~1 s) gets 429 until it is repaid.
    client_decode_cpu: float = Field(0.25, ge=0)
    client_decode_burst_s: float = Field(2.0, gt=0)
    max_url_fetches: int = Field(16, ge=1)  # URL inputs being fetched at once (all clients); beyond → 503
    max_connections: int = Field(256, ge=1)  # open connections + tasks before uvicorn answers 503
    keep_alive_timeout_s: float = Field(5.0, gt=0)  # idle keep-alive connections are closed after this
    header_timeout_s: float = Field(10.0, gt=0)  # a connection whose request headers are not complete by then closes
    body_timeout_s: float = Field(30.0, gt=0)  # whole request body read; past it → 408
    batch_stall_s: float = Field(30.0, gt=0)  # a batch running longer turns /readyz false until it returns

    @field_validator("url_allow_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(h.strip().lower().strip("[]") for h in value.split(",") if h.strip())
        return value

    @field_validator("log_level", "device_target", mode="before")
    @classmethod
    def _canonical_case(cls, value: object) -> object:
        if isinstance(value, str) and value.lower() == "ascend":
            return "Ascend"
        return value.upper() if isinstance(value, str) else value

    @field_validator("engine_precision", "log_format", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("admin_token")
    @classmethod
    def _token_strength(cls, value: str | None) -> str | None:
        if value is not None and value != "" and len(value) < 16:
            raise ValueError("must be at least 16 characters (or unset to disable the admin routes)")
        return value or None

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.url_timeout_s < self.url_connect_timeout_s:
            raise ValueError("url_timeout_s must be >= url_connect_timeout_s")
        if self.admin_port is not None and self.admin_socket is not None:
            raise ValueError("set at most one of admin_port and admin_socket")
        if self.max_bodies_bytes < self.max_body_bytes:
            raise ValueError("max_bodies_bytes must be >= max_body_bytes: a body at the cap could never be received")
        if self.max_images > self.max_in_flight:
            raise ValueError(
                f"max_images ({self.max_images}) must be <= queue_size + max_batch_size ({self.max_in_flight}): "
                "a bigger request could never be admitted"
            )
        return self

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """Compiled bucket sizes: powers of two below ``max_batch_size``, then ``max_batch_size`` itself."""
        sizes = [1 << i for i in range(self.max_batch_size.bit_length()) if (1 << i) < self.max_batch_size]
        return (*sizes, self.max_batch_size)

    @property
    def engine_options(self) -> EngineOptions:
        """What the runtime needs of these settings to build an engine."""
        return EngineOptions(
            batch_sizes=self.batch_sizes,
            device_target=self.device_target,
            threads=self.engine_threads,
            precision=self.engine_precision,
        )

    @property
    def max_in_flight(self) -> int:
        """Images admitted at once (decoding, queued or running): the queue plus one running batch."""
        return self.queue_size + self.max_batch_size

    @property
    def admin_separate(self) -> bool:
        """Whether /admin has its own listener (and is refused on the public one)."""
        return self.admin_port is not None or self.admin_socket is not None

    @property
    def cache_dir(self) -> Path:
        return self.compile_cache_dir or self.store_root / ".cache" / "compile"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with ``overrides`` (CLI flags; ``None`` values ignored) on top.

    Raises ``SettingsError`` naming each bad variable, its value and why.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except ValidationError as err:
        problems = []
        for item in err.errors():
            field = ".".join(str(p) for p in item["loc"])
            if not field:  # a rule across fields: its message names them
                problems.append(str(item["msg"]).removeprefix("Value error, "))
                continue
            shown = "<hidden>" if field == "admin_token" else repr(item.get("input"))
            problems.append(f"VITSERVE_{field.upper()}={shown}: {item['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
