"""No server path in a public body, and no forged log line (issue 21, items 6 and 7), in-process on the fake
engine: a version fails to load with its weights' absolute path in the reason; requests carry line breaks in
their (decoded) paths."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.service.fakes import FakeEngine, FakeFactory, auth, png
from vitserve.model_store import Card, ModelStore
from vitserve.service.core.errors import LoadFailed
from vitserve.service.observability.logs import configure_logging
from vitserve.service.v2.rest import protocol_error

pytestmark = pytest.mark.anyio

FAST = {"store_poll_interval_s": 0.05, "follow_retry_s": 0.3, "lease_ttl_s": 2.0, "replica_id": "test-replica"}


class MissingWeights(FakeFactory):
    """Fails tiny:2 as a missing weights file does: the reason names the file's absolute path."""

    def __call__(self, card: Card, store: ModelStore, options: object) -> FakeEngine:
        if card.ref == "tiny:2":
            raise FileNotFoundError(2, "No such file or directory", str(store.version_dir(card) / "model.ckpt"))
        return super().__call__(card, store, options)


@pytest.fixture
def factory() -> FakeFactory:
    return MissingWeights()


def assert_no_path(root: Path, *bodies: str) -> None:
    for body in bodies:
        assert str(root) not in body and str(root.parent) not in body, body


async def until(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_load_failure_shows_no_server_path(
    serve: Any, store: ModelStore, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve(**FAST) as (client, app):
        await client.post("/admin/models/tiny:2/load", headers=auth())  # fails: the reason holds the path
        store.set_alias("tiny", "production", 2)  # the follower tries, and keeps the reason as its sync error

        async def sync_failed() -> bool:
            return (await client.get("/models/tiny")).json()["sync"]["error"] is not None

        await until(sync_failed)
        listing, one = await client.get("/models"), await client.get("/models/tiny")
        app.state.lifecycle.startup_error = f"{LoadFailed.__name__}: {store.root}/tiny/2/model.ckpt is missing"
        ready = await client.get("/readyz")
        v2_meta = await client.get("/v2/models/tiny/versions/2")
        v2_infer = await client.post("/v2/models/tiny/versions/2/infer", json={"inputs": []})
        classify = await client.post("/classify?model=tiny:2", files={"file": png(1)})
    info = one.json()
    assert "model.ckpt" in info["versions"][1]["load_error"] and "model.ckpt" in info["sync"]["error"]
    assert "model.ckpt is missing" in ready.json()["error"]
    assert_no_path(store.root, listing.text, one.text, ready.text, v2_meta.text, v2_infer.text, classify.text)
    assert str(store.root) in caplog.text  # the whole reason stays in the server's log


async def test_v2_error_bodies_cut_paths(store: ModelStore) -> None:
    err = LoadFailed(f"tiny:2 failed to load: [Errno 2] No such file or directory: '{store.root}/tiny/2/model.ckpt'")
    answer = protocol_error(err)
    assert answer is not None and answer.status_code == 409
    message = json.loads(bytes(answer.body))["error"]
    assert "model.ckpt" in message
    assert_no_path(store.root, message)


async def test_a_broken_card_shows_no_server_path_over_v2(serve: Any, store: ModelStore) -> None:
    async with serve() as (client, _):
        card = store.root / "tiny" / "2" / "card.json"
        card.chmod(0o644)
        card.write_text("{not json")
        meta = await client.get("/v2/models/tiny/versions/2")
        ready = await client.get("/v2/models/tiny/versions/2/ready")
    assert 400 <= meta.status_code < 500 and 400 <= ready.status_code < 500
    assert_no_path(store.root, meta.text, ready.text)


class Counting(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1


@pytest.fixture
def server_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``configure_logging(fmt, "INFO")`` writing to a buffer instead of stderr; yields a function that sets it up
    and returns (the buffer, a handler counting the records the buffer got)."""
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    counting = Counting()

    def configure(fmt: str) -> tuple[io.StringIO, Counting]:
        stream = io.StringIO()
        monkeypatch.setattr(sys, "stderr", stream)
        configure_logging(fmt, "INFO")  # type: ignore[arg-type]
        root.addHandler(counting)
        return stream, counting

    try:
        yield configure
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


# %0a and %0d decode to line breaks in the path the access log writes; %C2%85 and %E2%80%A8 are NEL and U+2028,
# line breaks to str.splitlines and some log readers; %1b starts a terminal escape sequence.
FORGING_PATHS = [
    "/healthz%0a2026-01-01 00:00:00,000 INFO vitserve.access [-]: GET /admin 200",
    "/v2/models/ti%0d%0any/infer",
    "/models/x%C2%85y%E2%80%A8z%1b[31m",
]


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_each_log_record_is_one_line(serve: Any, server_log: Any, fmt: str) -> None:
    stream, counting = server_log(fmt)
    async with serve() as (client, _):
        answers = [await client.get(path) for path in FORGING_PATHS]
        answers.append(await client.post("/v2/models/ti%0any/infer", json={"inputs": []}))
    lines = stream.getvalue().splitlines()
    assert all(400 <= a.status_code < 500 for a in answers)
    assert counting.records > len(FORGING_PATHS) and len(lines) == counting.records, lines
    assert not any(line.startswith("2026-01-01") for line in lines)
    assert not any("\x1b" in line for line in lines)
    if fmt == "json":
        assert all(isinstance(json.loads(line), dict) for line in lines)
    else:
        assert any("/healthz\\n2026-01-01" in line for line in lines), lines
