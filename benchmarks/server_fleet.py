"""The HTTP benchmark's servers as process groups: started together, measured one at a time, always stopped.

Starting every server at once overlaps their slow start-ups (imports, exports, compilation). Once all are
ready, each is paused (SIGSTOP to its process group) and resumed only for its own measurements: an idle server
is not always idle (LitServe's worker polls its request queue every millisecond, ~0.2 core), and on a small
machine a neighbour's polling would be measured as the measured server's slowness. Each server runs in a
session of its own (``start_new_session``), so that stopping the group also stops the worker processes it
spawned (LitServe's inference worker, queue manager and API server).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

logger = logging.getLogger(__name__)

READY_POLL_S = 0.25


@dataclass(frozen=True)
class ServerSpec:
    label: str  # the benchmark row: "vitserve[openvino] fp32", "litserve[torch] fp32"...
    role: str  # "ours", "peer" or "overhead"
    precision: str  # "fp32", "int8", "bf16", or "none"
    command: Sequence[str]
    port: int  # a free 127.0.0.1 port, named in ``command``
    health_path: str  # 200 once the model is loaded and warm
    predict_path: str  # the classify route
    env: Mapping[str, str] = field(default_factory=dict)  # added to this process's environment

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def wait_ready(
    url: str, process: subprocess.Popen[bytes], timeout_s: float, path: str = "/readyz", name: str = "vitserve serve"
) -> None:
    """Poll ``url + path`` until it answers 200; raises if ``process`` exits first or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode} before it was ready")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        time.sleep(READY_POLL_S)
    raise TimeoutError(f"{name} was not ready within {timeout_s} s")


class ServerProcess:
    """One server: its process group, its log, and why it failed if it did."""

    def __init__(self, spec: ServerSpec, log_path: Path) -> None:
        self.spec = spec
        self.log_path = log_path
        self.error: str | None = None
        self.stopped = False
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                list(spec.command),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **spec.env},
                start_new_session=True,  # its own process group: stop() reaches the workers it spawns
            )

    @property
    def url(self) -> str:
        return self.spec.url

    def wait_ready(self, timeout_s: float) -> bool:
        """True once healthy; else records ``error`` (with the end of its log) and returns False."""
        try:
            wait_ready(self.url, self.process, max(timeout_s, 1.0), self.spec.health_path, self.spec.label)
            return True
        except (RuntimeError, TimeoutError) as err:
            self.error = f"{err}; its log ends:\n{self.log_tail()}"
            return False

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def pause(self) -> None:
        if not self.stopped:
            self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        if not self.stopped:
            self._signal(signal.SIGCONT)

    def stop(self, timeout_s: float = 60) -> None:
        """SIGTERM to the group (resumed, so that a paused one can act on it); SIGKILL what is left. Once."""
        if self.stopped:
            return
        self.stopped = True
        self._signal(signal.SIGTERM)
        self._signal(signal.SIGCONT)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._signal(signal.SIGKILL)  # workers that outlived their parent

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)  # the group's id is the leader's pid (start_new_session)


@contextlib.contextmanager
def server_fleet(specs: Sequence[ServerSpec], logdir: Path, ready_timeout_s: float) -> Iterator[list[ServerProcess]]:
    """Start every server, wait until each is ready (or has failed: ``error``), pause them all, yield them in
    ``specs``' order; stop every one on the way out."""
    servers: list[ServerProcess] = []
    try:
        for spec in specs:
            slug = re.sub(r"[^A-Za-z0-9.-]+", "-", spec.label).strip("-")
            servers.append(ServerProcess(spec, logdir / f"{slug}.log"))
        deadline = time.monotonic() + ready_timeout_s
        for server in servers:
            if server.wait_ready(deadline - time.monotonic()):
                logger.info("%s ready", server.spec.label)
            else:
                logger.warning("%s failed to start: %s", server.spec.label, server.error)
                server.stop()
        for server in servers:
            server.pause()
        yield servers
    finally:
        for server in servers:
            server.stop()


@contextlib.contextmanager
def measuring(server: ServerProcess) -> Iterator[str]:
    """Resume ``server`` for one measurement, yield its URL, and pause it again (it keeps its warm state)."""
    server.resume()
    try:
        yield server.url
    finally:
        server.pause()
