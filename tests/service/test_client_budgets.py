"""Per-client rates: the token buckets, the request rate (before any body byte) and the decoding-CPU share, which
bind only while the replica is contended (another client active, over half the admission budget in progress)."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image

from tests.service.conftest import running
from tests.service.fakes import Clock, FakeFactory, png
from tests.service.test_hardening import call_asgi
from vitserve.service.app import create_app
from vitserve.service.core.admission import ACTIVE_WINDOW_S
from vitserve.service.core.client_budgets import ClientBudgets, client_id, take_decoding, take_request
from vitserve.service.core.errors import RateLimited, retry_after_s
from vitserve.service.core.metrics import Metrics


@contextlib.contextmanager
def contended(app: FastAPI, neighbour: str = "neighbour") -> Iterator[None]:
    """Another client holds just over half of ``app``'s admission budget: every other client is contended."""
    admission = app.state.classifier.admission
    with admission.admit(neighbour, admission.max_in_flight // 2 + 1, 0):
        yield


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    clock = Clock()
    budgets = ClientBudgets(rate=2, burst=3, clock=clock)
    for _ in range(3):
        assert budgets.wait_s("a", need=1) == 0
        budgets.charge("a", 1)
    assert budgets.wait_s("a", need=1) == pytest.approx(0.5)  # one token comes back every half second
    assert budgets.wait_s("b", need=1) == 0  # another client is untouched
    clock.now += 0.5
    assert budgets.wait_s("a", need=1) == 0
    clock.now += 60
    assert budgets.level("a") == 3  # never more than the burst


def test_work_is_charged_in_full_and_a_client_in_debt_waits_until_repaid() -> None:
    clock = Clock()
    budgets = ClientBudgets(rate=0.25, burst=2, clock=clock)
    assert budgets.wait_s("a") == 0
    budgets.charge("a", 3.0)  # one request's images cost more than the burst: it ran, the client owes 1 s
    assert budgets.wait_s("a") == pytest.approx(4.0)
    clock.now += 4.0
    assert budgets.wait_s("a") == 0
    assert retry_after_s(0.01) == 1 and retry_after_s(4.2) == 5


def test_the_table_keeps_the_most_recently_seen_clients() -> None:
    clock = Clock()
    budgets = ClientBudgets(rate=1, burst=1, max_clients=2, clock=clock)
    for client in ("a", "b", "c"):
        budgets.charge(client, 5)
    assert list(budgets.clients()) == ["b", "c"]
    assert budgets.wait_s("a") == 0  # forgotten: a full bucket, as after a quiet spell
    with pytest.raises(ValueError):
        ClientBudgets(rate=0, burst=1)


def test_client_identity_from_a_trusted_header_or_the_peer() -> None:
    headers = [(b"host", b"x"), (b"X-Forwarded-For", b" 203.0.113.7 , 10.0.0.1")]
    assert client_id(headers, "10.1.1.1", "x-forwarded-for") == "203.0.113.7"
    assert client_id(headers, "10.1.1.1", None) == "10.1.1.1"
    assert client_id([(b"x-forwarded-for", b"")], "10.1.1.1", "x-forwarded-for") == "10.1.1.1"
    assert client_id([(b"x-client", b"a" * 100)], None, "x-client") == "a" * 64
    assert client_id([], None, "x-client") == ""


def test_a_bucket_binds_only_when_it_says_so_and_lending_leaves_no_debt() -> None:
    clock, metrics = Clock(), Metrics()
    contention = {"now": False}
    budgets = ClientBudgets(rate=1, burst=2, binds=lambda client: contention["now"], clock=clock)
    for _ in range(50):  # far over the bucket, but nobody else wants the replica: borrowed
        take_request(budgets, "a", metrics)
    assert budgets.level("a") == 0  # the tokens it had are spent, the rest was lent: it owes nothing
    contention["now"] = True
    with pytest.raises(RateLimited) as refused:
        take_request(budgets, "a", metrics)
    assert refused.value.retry_after_s == pytest.approx(1.0)
    clock.now += 1
    take_request(budgets, "a", metrics)  # its own token: allowed under contention too

    decode = ClientBudgets(rate=0.25, burst=1, binds=lambda client: contention["now"], clock=clock)
    decode.charge("a", 30.0)  # 30 CPU-seconds of decoding, from a client with a 1 s burst
    with pytest.raises(RateLimited, match="decoding"):
        take_decoding(decode, "a", metrics)  # contended: it waits until repaid
    contention["now"] = False
    take_decoding(decode, "a", metrics)  # alone again: what it borrowed is forgiven, not owed back
    assert decode.level("a") == 0 and decode.wait_s("a") == 0


@pytest.mark.anyio
async def test_a_client_over_its_request_rate_gets_429_before_its_body_is_read(
    make_settings: Any, factory: FakeFactory
) -> None:
    app = create_app(make_settings(client_header="x-client", client_rate=0.2, client_burst=3), engine_factory=factory)
    async with running(app) as client:
        alone = [await client.post("/classify", files={"file": png(i)}, headers={"x-client": "hog"}) for i in range(6)]
        assert [r.status_code for r in alone] == [200] * 6  # alone, it borrows what nobody else wants
        with contended(app):
            refused = await client.post("/classify", files={"file": png(3)}, headers={"x-client": "hog"})
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "rate_limited"
            assert 1 <= int(refused.headers["retry-after"]) <= 5  # one token every 5 s
            other = await client.post("/classify", files={"file": png(4)}, headers={"x-client": "polite"})
            assert other.status_code == 200
            assert (await client.get("/healthz")).status_code == 200  # probes are not counted
            body = b"\xff" * 1000
            headers = [(b"x-client", b"hog"), (b"content-type", b"image/png"), (b"content-length", b"1000")]
            assert await call_asgi(app, "/classify", headers, body) == (429, 0)  # refused unread
        metrics = (await client.get("/metrics")).text
    assert 'vitserve_rejections_total{reason="client_rate"}' in metrics


@pytest.mark.anyio
async def test_fixed_rates_bind_a_client_alone(make_settings: Any, factory: FakeFactory) -> None:
    settings = make_settings(client_rate=0.2, client_burst=2, client_rates_fixed=True)
    app = create_app(settings, engine_factory=factory)
    async with running(app) as client:
        codes = [(await client.post("/classify", files={"file": png(i)})).status_code for i in range(3)]
    assert codes == [200, 200, 429]


@pytest.mark.anyio
async def test_request_rate_zero_turns_the_limit_off(make_settings: Any, factory: FakeFactory) -> None:
    app = create_app(make_settings(client_rate=0, client_burst=1), engine_factory=factory)
    async with running(app) as client:
        codes = [(await client.post("/classify", files={"file": png(i)})).status_code for i in range(4)]
    assert codes == [200] * 4


def wide_png(height: int, width: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((height, width), np.uint16)).save(buf, format="PNG")  # 16-bit: slow per pixel
    return buf.getvalue()


@pytest.mark.anyio
async def test_a_client_over_its_decoding_share_waits_and_others_do_not(
    make_settings: Any, factory: FakeFactory
) -> None:
    # A 12 MP 16-bit PNG takes 0.05-0.3 s of decoding CPU (by machine), a truncated one ~0.02 s before it fails;
    # the share is 0.01 CPU-s a second after a 1 ms burst, so either puts its client in debt.
    settings = make_settings(client_header="x-client", client_decode_cpu=0.01, client_decode_burst_s=0.001)
    app = create_app(settings, engine_factory=factory)
    big = wide_png(3000, 4000)
    async with running(app) as client:
        with contended(app):  # another client's images wait: the share binds
            first = await client.post(
                "/classify", content=big, headers={"x-client": "big", "content-type": "image/png"}
            )
            assert first.status_code == 200
            again = await client.post("/classify", files={"file": png(0)}, headers={"x-client": "big"})
            assert again.status_code == 429
            assert again.json()["error"]["code"] == "rate_limited"
            assert "decoding" in again.json()["error"]["message"]
            assert int(again.headers["retry-after"]) >= 2  # ≥ 0.05 s of CPU owed at 0.01 a second
            polite = await client.post("/classify", files={"file": png(1)}, headers={"x-client": "polite"})
            assert polite.status_code == 200
            # A decode that fails costs its client what it spent, too: a truncated huge image is no way around.
            cut = wide_png(3000, 4000)
            truncated = await client.post(
                "/classify",
                content=cut[: len(cut) * 3 // 4],
                headers={"x-client": "cutter", "content-type": "image/png"},
            )
            assert truncated.status_code == 400
            after = await client.post("/classify", files={"file": png(2)}, headers={"x-client": "cutter"})
            assert after.status_code == 429
        # Once nobody else is active (their last request older than the activity window), the client in debt is
        # served again: the cores have nobody else to serve.
        await asyncio.sleep(ACTIVE_WINDOW_S + 0.1)
        spare = await client.post("/classify", files={"file": png(3)}, headers={"x-client": "big"})
        assert spare.status_code == 200


@pytest.mark.anyio
async def test_a_client_alone_decodes_as_much_as_it_sends(make_settings: Any, factory: FakeFactory) -> None:
    settings = make_settings(client_header="x-client", client_decode_cpu=0.01, client_decode_burst_s=0.001)
    app = create_app(settings, engine_factory=factory)
    headers = {"x-client": "alone"}
    async with running(app) as client:
        big = await client.post(
            "/classify", content=wide_png(3000, 4000), headers={**headers, "content-type": "image/png"}
        )
        codes = [big.status_code]
        codes += [
            (await client.post("/classify", files={"file": png(i)}, headers=headers)).status_code for i in range(3)
        ]
    assert codes == [200] * 4  # 100x its decoding share, and never refused: nobody else wanted the CPU


@pytest.mark.anyio
async def test_a_decode_that_outlives_its_request_is_still_charged(make_settings: Any, factory: FakeFactory) -> None:
    # A short deadline answers 504 at once while the large lane goes on decoding: the client still pays for it.
    settings = make_settings(client_header="x-client", client_decode_cpu=0.05, client_decode_burst_s=0.02)
    app = create_app(settings, engine_factory=factory)
    budgets = app.state.classifier.decode_budgets
    async with running(app) as client:
        headers = {"x-client": "impatient", "content-type": "image/png"}
        gave_up = await client.post(
            "/classify", params={"timeout_s": 0.15}, content=wide_png(3000, 4000), headers=headers
        )
        assert gave_up.status_code == 504
        for _ in range(100):  # the decode finishes within ~0.3 s CPU of starting
            if budgets.wait_s("impatient") > 0:
                break
            await asyncio.sleep(0.05)
        with contended(app):
            after = await client.post("/classify", files={"file": png(0)}, headers={"x-client": "impatient"})
    assert after.status_code == 429
