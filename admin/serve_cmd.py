"""``vitserve serve``: run the HTTP service under uvicorn. Flags override ``VITSERVE_*`` environment variables."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import uvicorn

from vitserve.admin.errors import CommandError
from vitserve.admin.listeners import admin_server, connection_limits, run_servers
from vitserve.model_store.serving import PRECISIONS
from vitserve.runtime.engine import ENGINE_CHOICES

log = logging.getLogger(__name__)

EPILOG = """examples:
  vitserve serve                                   the store's default model on 127.0.0.1:8000
  vitserve serve --host 0.0.0.0 --port 8080 --store /models --model digits-vit@production
  VITSERVE_ADMIN_TOKEN=... vitserve serve          also mount the /admin routes

Every setting is also an environment variable VITSERVE_<NAME> (see service/settings.py), e.g.
VITSERVE_MAX_BATCH_SIZE=16 VITSERVE_MAX_DELAY_MS=10 VITSERVE_QUEUE_SIZE=128 VITSERVE_DRAIN_TIMEOUT_S=30.
SIGTERM: /readyz turns 503 at once, new requests get 503, in-flight work drains, exit 0.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve``."""
    p = sub.add_parser(
        "serve",
        help="run the HTTP classification service",
        description="Serve image classification over HTTP (FastAPI under uvicorn) from the model store.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--grpc-port", type=int, help="Open Inference Protocol gRPC port (default: none; Triton uses 8001)")
    p.add_argument("--store", type=Path, dest="store_root", metavar="DIR", help="model store root (default ./store)")
    p.add_argument("--model", dest="default_model", metavar="REF", help="model served at start (default digits-vit)")
    p.add_argument("--device", dest="device_target", choices=["CPU", "GPU", "Ascend"], help="device (default CPU)")
    p.add_argument("--engine", choices=ENGINE_CHOICES, help="inference backend")
    p.add_argument("--engine-threads", type=int, metavar="N", help="CPU engines' threads (default: the CPUs available)")
    p.add_argument(
        "--engine-precision",
        choices=("auto", *PRECISIONS),
        help="CPU engines' precision (default auto: each version's opt-in, see `vitserve models set-precision`)",
    )
    p.add_argument("--max-batch-size", type=int, help="largest batch (compiled buckets 1, 2, 4, ... up to it)")
    p.add_argument("--max-delay-ms", type=float, help="an idle engine's wait for requests still decoding (0)")
    p.add_argument("--queue-size", type=int, help="waiting images per version before 503")
    p.add_argument("--decode-workers", type=int, help="image decoding threads")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--log-format", choices=["json", "text"], help="log lines as JSON (default) or plain text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Before MindSpore is imported: it asks for protobuf's pure-Python runtime (to load checkpoints over 2 GiB),
    # under which parsing one gRPC message of a million tiny entries takes seconds of CPU, where the C runtime
    # (upb) takes tens of milliseconds. Our checkpoints stay far below 2 GiB; set the variable to ``python`` to
    # load a larger one.
    os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "upb")
    from vitserve.service.app import create_app
    from vitserve.service.observability.logs import configure_logging
    from vitserve.service.settings import SettingsError, load_settings

    names = ["host", "port", "grpc_port", "store_root", "default_model", "device_target", "engine", "engine_threads"]
    names += ["engine_precision", "max_batch_size", "max_delay_ms", "queue_size", "decode_workers", "log_level"]
    names += ["log_format"]
    try:
        settings = load_settings(**{name: getattr(args, name) for name in names})
    except SettingsError as err:
        raise CommandError(str(err)) from None
    configure_logging(settings.log_format, settings.log_level)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's loggers go through the handler configure_logging set (JSON by default)
        timeout_graceful_shutdown=max(1, round(settings.drain_timeout_s)),
        access_log=settings.log_level == "DEBUG",
        **connection_limits(settings),
    )

    def drain() -> None:
        app.state.lifecycle.draining = True

    server = DrainingServer(config, on_exit=drain)
    run_servers(server, admin_server(app, settings))
    if not server.started:
        raise CommandError(f"the service did not start: {app.state.lifecycle.startup_error or 'see the log above'}")
    return 0


class DrainingServer(uvicorn.Server):
    """uvicorn's server, with readiness turned off the moment SIGTERM/SIGINT arrives and a clean exit after the
    drain (uvicorn re-raises the signal after a graceful shutdown, which would end the process with 143)."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        log.info("signal %d: readiness off, draining in-flight work", sig)
        self.on_exit()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
