"""The doors through which the chaos driver changes the store and the fleet, each recording its outcome in the
ledger: the store's API (in a thread), the CLI (``vitserve models ...``, a process of its own), a replica's
admin API, and store writers run as processes that the driver kills (SIGKILL) mid-write.

A refusal the store documents (an aliased or held version, a missing one, a canary on the alias's own version)
is an outcome, not a failure. What no contract allows is recorded as a violation ``0 error``: an exception of
another kind from the store's API, a traceback from the CLI, a 500 from the admin API, or a live replica that
does not answer it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from vitserve.benchmarks.chaos_fleet import Replica, admin_headers
from vitserve.benchmarks.chaos_ledger import Ledger
from vitserve.benchmarks.chaos_load import error_code
from vitserve.benchmarks.http_bench import serve_command
from vitserve.model_store import ModelStore, StoreError
from vitserve.model_store.errors import ModelNotFound
from vitserve.model_store.staging import PAUSE_ENV

T = TypeVar("T")

CLI_TIMEOUT_S = 120.0
ADMIN_TIMEOUT_S = 180.0  # an explicit load, an admin promote or an upload loads or verifies a version first
CLI_OUTCOMES = {0: "ok", 3: "not found", 4: "refused"}  # admin.errors: else 1 failed (a message, not a bug)
QUIET_ENV = {"GLOG_v": "3"}  # MindSpore: errors only


def writer_command(store: ModelStore, seed: int, aliases: Sequence[str] = ()) -> list[str]:
    """``benchmarks.chaos_writer`` publishing one version of random weights from ``seed``."""
    return [sys.executable, "-m", "vitserve.benchmarks.chaos_writer", str(store.root), str(seed), *aliases]


def cli_command(store: ModelStore, *args: str) -> list[str]:
    return [*serve_command(), "models", *args, "--store", str(store.root)]


@dataclass
class Calls:
    store: ModelStore
    ledger: Ledger
    http: httpx.AsyncClient

    async def store_api(self, kind: str, what: str, call: Callable[[], T]) -> T | None:
        """``call()`` in a thread; ``what`` names its subject in the ledger."""
        try:
            result = await asyncio.to_thread(call)
        except ModelNotFound as err:
            self.ledger.change(kind, "not found", f"{what}: {err}")
            return None
        except StoreError as err:
            self.ledger.change(kind, f"refused: {type(err).__name__}", f"{what}: {err}")
            return None
        except Exception as err:  # anything else is a failure no contract of the store documents
            self.ledger.change(kind, f"error: {type(err).__name__}", f"{what}: {err}")
            self.ledger.violate("0 error", f"{kind} {what}: {type(err).__name__}: {err}", trace=_trace())
            return None
        self.ledger.change(kind, "ok", f"{what}: {_short(result)}")
        return result

    async def cli(self, kind: str, *args: str) -> int | None:
        """``vitserve models *args`` to its end; its exit status."""
        process = await _spawn(cli_command(self.store, *args))
        try:
            out, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            self.ledger.violate("0 error", f"{kind} {' '.join(args)}: no exit in {CLI_TIMEOUT_S:g} s")
            return None
        status = process.returncode
        lines = (err or out).decode(errors="replace").strip().splitlines()
        detail = f"{' '.join(args)}: {lines[-1][:300] if lines else ''}"
        self.ledger.change(kind, CLI_OUTCOMES.get(status or 0, f"failed ({status})"), detail)
        if b"Traceback" in err:
            self.ledger.violate(
                "0 error", f"{kind}: the CLI crashed: {detail}", stderr=err.decode(errors="replace")[-2000:]
            )
        return status

    async def admin(self, kind: str, replica: Replica, path: str, **request: Any) -> httpx.Response | None:
        """POST ``/admin/{path}`` on ``replica`` with the token."""
        started = time.monotonic()
        url = f"{replica.url}/admin/{path}"
        try:
            response = await self.http.post(url, headers=admin_headers(), timeout=ADMIN_TIMEOUT_S, **request)
        except httpx.HTTPError as err:
            down = replica.down_during(started, time.monotonic())
            self.ledger.change(kind, "replica down" if down else f"error: {type(err).__name__}", f"{path}: {err}")
            if not down:
                self.ledger.violate("0 error", f"{kind}: live replica {replica.index} did not answer {path}: {err!r}")
            return None
        ok = response.is_success
        outcome = "ok" if ok else f"{response.status_code} {error_code(response.text)}"
        self.ledger.change(
            kind, outcome, f"replica {replica.index} {path}" + ("" if ok else f": {response.text[:300]}")
        )
        if response.status_code >= 500 and response.status_code not in (503, 504):
            self.ledger.violate("0 error", f"{kind} on replica {replica.index}: {path}", body=response.text[:2000])
        return response

    async def writer(self, kind: str, seed: int, aliases: Sequence[str] = ()) -> None:
        """A writer process publishing one version, to its end."""
        process = await _spawn(writer_command(self.store, seed, aliases))
        out, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
        text = out.decode(errors="replace").strip() or err.decode(errors="replace").strip()[-300:]
        status = process.returncode or 0
        self.ledger.change(kind, CLI_OUTCOMES.get(status, f"failed ({status})"), text)
        if b"Traceback" in err:
            self.ledger.violate("0 error", f"{kind}: the writer crashed", stderr=err.decode(errors="replace")[-2000:])

    async def killed(self, kind: str, command: list[str], *, pause_at: str | None, kill_after_s: float) -> None:
        """Run ``command`` and SIGKILL it: once the store says it paused at ``pause_at`` (a publish stage),
        else after ``kill_after_s``. A writer that ends first is recorded as such."""
        process = await _spawn(command, {PAUSE_ENV: pause_at} if pause_at else {})
        if pause_at is not None:
            await _paused(process, pause_at)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), kill_after_s)
        if process.returncode is None:
            process.kill()
            outcome = f"killed at {pause_at}" if pause_at else "killed"
        else:
            outcome = f"ended before the kill ({process.returncode})"
        await process.communicate()
        self.ledger.change(kind, outcome, " ".join(command[-4:]))


async def _spawn(command: list[str], env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **QUIET_ENV, **(env or {})},
    )


async def _paused(process: asyncio.subprocess.Process, stage: str, timeout_s: float = CLI_TIMEOUT_S) -> None:
    """Read the writer's stderr until the store's ``paused at STAGE`` line (or its end, or the timeout)."""
    assert process.stderr is not None
    with_deadline = time.monotonic() + timeout_s
    while time.monotonic() < with_deadline:
        try:
            line = await asyncio.wait_for(process.stderr.readline(), max(0.1, with_deadline - time.monotonic()))
        except TimeoutError:
            return
        if not line or f"paused at {stage}".encode() in line:
            return


def _short(result: object) -> str:
    return str(getattr(result, "ref", result))[:200]


def _trace() -> str:
    return traceback.format_exc()[-2000:]
