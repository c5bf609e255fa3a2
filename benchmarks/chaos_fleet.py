"""The chaos test's replicas: real ``vitserve serve`` processes on 127.0.0.1 that follow one store, which the
driver kills (SIGKILL) or stops (SIGTERM) and starts again on the same port under the same replica id.

Each replica keeps the intervals in which it was down: from the moment the driver decided to stop it (before
the signal) until its restarted process answered ``/readyz`` 200. Requests and readings that overlap one are
judged knowing the replica was down (see ``benchmarks.chaos``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

from vitserve.benchmarks.chaos_ledger import Ledger
from vitserve.benchmarks.http_bench import free_port, serve_command
from vitserve.benchmarks.server_fleet import ServerProcess, ServerSpec

ADMIN_TOKEN = "chaos-admin-token-0123456789"
POLL_S = 0.2  # VITSERVE_STORE_POLL_INTERVAL_S
LEASE_TTL_S = 3.0  # VITSERVE_LEASE_TTL_S: renewed every TTL/3
FOLLOW_RETRY_S = 1.0  # first wait before retrying a version that failed to load (doubles up to 16×)
READY_TIMEOUT_S = 300.0  # start-up on a small shared machine: imports, the ONNX export, warm-up

# One CPU engine thread and one decoding thread each: three replicas, the load and the driver share the machine.
REPLICA_SETTINGS: dict[str, object] = {
    "engine": "onnxruntime",  # the CPU path of the fleet test: an export per version, cached in the store
    "engine_precision": "fp32",
    "engine_threads": 1,
    "decode_workers": 1,
    "max_batch_size": 2,
    "max_delay_ms": 5,
    "queue_size": 16,
    "max_images": 4,  # each request sends one
    "admin_token": ADMIN_TOKEN,
    "store_poll_interval_s": POLL_S,
    "lease_ttl_s": LEASE_TTL_S,
    "follow_retry_s": FOLLOW_RETRY_S,
    "canary_guard": "false",  # every canary is a healthy version: only the driver moves the store
    "drain_timeout_s": 5,
    # A swap builds on the builder thread beside serving batches; on 2 shared cores a request can wait behind
    # an export. The chaos test counts failed requests, not latency.
    "request_timeout_s": 60,
    "client_rate": 0,  # one load generator stands for many clients
    "log_format": "text",
    "log_level": "INFO",
}


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Replica:
    """One replica across its restarts (``incarnation`` counts its processes)."""

    def __init__(self, index: int, store_root: Path, model: str, logdir: Path) -> None:
        self.index = index
        self.replica_id = f"chaos-replica-{index}"
        self.port = free_port()
        self.store_root, self.model, self.logdir = store_root, model, logdir
        self.incarnation = 0
        self.server: ServerProcess | None = None
        self.ready_since: float | None = None  # None while down
        self.down: list[tuple[float, float | None]] = [(time.monotonic(), None)]  # (from, to); down until ready

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def up(self) -> bool:
        return self.ready_since is not None

    def start(self) -> None:
        """Start a new process (not waiting for it: ``wait_ready``); one that never became ready is stopped."""
        if self.server is not None and not self.server.stopped:
            self.server.stop(timeout_s=10)
        self.incarnation += 1
        settings = {
            **REPLICA_SETTINGS,
            "store_root": self.store_root,
            "default_model": self.model,
            "host": "127.0.0.1",
            "port": self.port,
            "replica_id": self.replica_id,
            "compile_cache_dir": self.logdir / f"compile-cache-{self.index}",
        }
        env = {f"VITSERVE_{k.upper()}": str(v) for k, v in settings.items()} | {"GLOG_v": "3"}
        label = f"{self.replica_id}.{self.incarnation}"
        spec = ServerSpec(label, "ours", "fp32", [*serve_command(), "serve"], self.port, "/readyz", "/classify", env)
        self.server = ServerProcess(spec, self.logdir / f"{label}.log")

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> bool:
        """True once ``/readyz`` is 200 (the replica is up from then on); else ``server.error`` says why."""
        assert self.server is not None
        if not await asyncio.to_thread(self.server.wait_ready, timeout_s):
            return False
        self.ready_since = time.monotonic()
        self.down[-1] = (self.down[-1][0], self.ready_since)
        return True

    def mark_down(self, ledger: Ledger, why: str) -> None:
        """From now on the replica counts as down; its pins end."""
        now = time.monotonic()
        if self.up:
            self.ready_since = None
            self.down.append((now, None))
        dropped = ledger.drop_pins(self.index, now)
        ledger.event(f"replica {self.index} down ({why}); pins dropped: {dropped or 'none'}")

    async def stop(self, ledger: Ledger, *, hard: bool) -> None:
        """SIGKILL (``hard``) or SIGTERM (a drained shutdown, SIGKILL after 60 s) and wait for the exit."""
        self.mark_down(ledger, "kill -9" if hard else "SIGTERM")
        server = self.server
        if server is None or server.stopped:
            return
        if hard:
            server.stopped = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGKILL)  # its own session: the group is the server
            await asyncio.to_thread(server.process.wait)
        else:
            await asyncio.to_thread(server.stop, 60)

    def down_during(self, start: float, end: float) -> bool:
        """Whether the replica was down at any moment between ``start`` and ``end``."""
        return any(since <= end and (until is None or until >= start) for since, until in self.down)

    def exited(self) -> int | None:
        """The exit status of a process that ended while the replica was up (it was not stopped)."""
        if not self.up or self.server is None:
            return None
        return self.server.process.poll()

    def log_tail(self, chars: int = 3000) -> str:
        return self.server.log_tail(chars) if self.server is not None else ""

    def close(self) -> None:
        if self.server is not None:
            self.server.stop(timeout_s=30)
