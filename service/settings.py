"""The service's settings: ``VITSERVE_*`` environment variables (CLI flags override them), validated at start-up.

Every field is documented here once; ``vitserve serve --help`` and the deploy manifests point at these names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from vitserve.model_store.serving import Precision
from vitserve.runtime.engine import EngineChoice, EngineOptions
from vitserve.service.observability.logs import LogFormat

DeviceTarget = Literal["CPU", "GPU", "Ascend"]
EnginePrecision = Literal["auto", Precision]  # auto: each version's opt-in (its card), else fp32
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
    engine: EngineChoice = "auto"
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
    # a replica's lease counts this long after its last renewal; at most a week (model_store.leases refuses more)
    lease_ttl_s: float = Field(30.0, gt=0, le=7 * 24 * 3600)
    replica_id: str | None = None  # this replica's name in the store's leases; unset → <hostname>-<pid>
    # The longest a store call (a stat, a card read, a lease write) may take before the store counts as unreachable
    # (service/lifecycle/store_calls.py): the replica then serves what it has loaded and says so in /models, /readyz.
    store_timeout_s: float = Field(10.0, gt=0)
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
    # Each client's share of the admission budget is the budget ÷ the active clients, and binds only while the
    # replica is busy (service/core/admission.py): a client alone may hold all of it. client_share is a fixed cap
    # on top: the fraction one client may hold at once even alone; 1 → no fixed cap.
    client_share: float = Field(1.0, gt=0, le=1)
    # Header a trusted proxy sets to the client's address (e.g. x-forwarded-for: its first entry); unset → the
    # peer address. Never set it without such a proxy: clients could then pick their own identity.
    client_header: str | None = None
    # Rates per client (service/core/client_budgets.py), token buckets refilled each second; 0 → no limit. They
    # are each client's share under contention, not caps: the request rate binds only while another client is active
    # and the replica is busy, decoding CPU while another client is active; a client alone is never held to them.
    # Requests (all but probes and /admin) beyond client_rate a second, after a burst of client_burst → 429.
    client_rate: float = Field(50.0, ge=0)
    client_burst: int = Field(100, ge=1)
    # Decoding CPU one client may use: CPU-seconds a second on average (0.25 → a quarter of a core), after a burst
    # of client_decode_burst_s; a client in debt (one huge image costs ~1 s) gets 429 until it is repaid.
    client_decode_cpu: float = Field(0.25, ge=0)
    client_decode_burst_s: float = Field(2.0, gt=0)
    # true → client_rate and client_decode_cpu are fixed per-client quotas, binding even a client alone on an idle
    # replica (what one pays for, say); false → shares that bind only under contention (above).
    client_rates_fixed: bool = False
    max_url_fetches: int = Field(16, ge=1)  # URL inputs being fetched at once (all clients); beyond → 503
    max_connections: int = Field(256, ge=1)  # open connections + tasks before uvicorn answers 503
    keep_alive_timeout_s: float = Field(5.0, gt=0)  # idle keep-alive connections are closed after this
    header_timeout_s: float = Field(10.0, gt=0)  # a connection whose request headers are not complete by then closes
    body_timeout_s: float = Field(30.0, gt=0)  # whole request body read; past it → 408
    batch_stall_s: float = Field(30.0, gt=0)  # a batch running longer turns /readyz false until it returns
    # ----- The gRPC listener (grpc_port): what bounds it, as uvicorn's settings above bound the HTTP one -----
    # Its messages also obey max_body_bytes (refused by gRPC itself) and share max_bodies_bytes with HTTP bodies;
    # a message must arrive within body_timeout_s of the call's start, and a connection must finish its HTTP/2
    # handshake within header_timeout_s. Every call but ServerLive/ServerReady counts against the client rates.
    grpc_max_concurrent_rpcs: int = Field(64, ge=1)  # calls in progress, all connections; beyond → RESOURCE_EXHAUSTED
    grpc_max_streams_per_connection: int = Field(100, ge=1)  # calls one connection may have open (HTTP/2 streams)
    grpc_max_connections: int = Field(256, ge=1)  # open connections; a connection beyond is closed at once
    grpc_idle_timeout_s: float = Field(60.0, gt=0)  # a connection without a call this long is closed (GOAWAY)
    # Then a connection is told to go (GOAWAY) and its calls get the longest a call can take to finish: clients
    # reconnect, so one connection cannot be held for ever, and load spreads again after a scale-up.
    grpc_max_connection_age_s: float = Field(3600.0, gt=0)
    # Metadata key a trusted proxy in front of the gRPC port sets to the client's address (its first entry, as
    # client_header); unset → the peer's address without its port. client_header never applies to gRPC: the HTTP
    # proxy does not guard this port, and a caller reaching it directly could name itself anew with each call.
    grpc_client_header: str | None = None
    # ----- Many models on one replica (README "Many models on one replica", service/lifecycle/residency.py) -----
    # Models whose versions a request may load when they are in the store but not loaded here: names (comma-
    # separated), or * for every model. Empty (the default): none; such a request is a 404 naming the admin route
    # that loads the version, as before on-demand loading existed. Opt-in because the requesting client pays the
    # version's cold start (seconds of compilation) and every replica it reaches loads the version.
    on_demand_models: Annotated[tuple[str, ...], NoDecode] = ()
    # Bytes the loaded versions may hold together, each measured as it loads (the process's resident memory across
    # its build and warm-up). A version loaded on demand first evicts the least recently used versions that were
    # loaded on demand; served, canary, held and pinned versions are never evicted. Unset → the memory limit (the
    # container's cgroup, else the machine's memory) minus the process's size at start-up and the headroom below.
    memory_budget: int | None = Field(None, ge=1)
    memory_headroom_bytes: int = Field(512 * 1024**2, ge=0)  # left for request bodies, decoding and batches
    # Each model's share of the device while several models have batches waiting, as name=weight pairs (comma-
    # separated; a model not named has weight 1): weight 2 gets twice the device time of weight 1. One model alone
    # takes the whole device whatever its weight. (service/batching/scheduler.py)
    model_weights: Annotated[dict[str, float], NoDecode] = {}
    # Models whose results are cached by image content (names or *): identical image bytes (or pixels) for the same
    # version are answered from a bounded cache, and identical images in flight share one inference.
    result_cache_models: Annotated[tuple[str, ...], NoDecode] = ()
    result_cache_entries: int = Field(1024, ge=1)  # results kept per cached version (least recently used make way)

    @field_validator("on_demand_models", "result_cache_models", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(name.strip() for name in value.split(",") if name.strip())
        return value

    @field_validator("model_weights", mode="before")
    @classmethod
    def _parse_weights(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        weights: dict[str, str] = {}
        for pair in (p.strip() for p in value.split(",") if p.strip()):
            name, sep, weight = pair.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"expected name=weight pairs separated by commas, got {pair!r}")
            weights[name.strip()] = weight.strip()
        return weights

    @field_validator("model_weights")
    @classmethod
    def _positive_weights(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {name: weight for name, weight in value.items() if not weight > 0}
        if bad:
            raise ValueError(f"weights must be positive, got {bad}")
        return value

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

    def loads_on_demand(self, name: str) -> bool:
        """Whether a request may load a version of model ``name`` on demand (``on_demand_models``)."""
        return "*" in self.on_demand_models or name in self.on_demand_models

    def caches_results(self, name: str) -> bool:
        """Whether model ``name``'s results are cached by image content (``result_cache_models``)."""
        return "*" in self.result_cache_models or name in self.result_cache_models

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
