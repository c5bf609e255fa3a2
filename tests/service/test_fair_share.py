"""Fair, and work-conserving: a client alone may use the whole replica, and under contention each active client
gets its fair share of the admission budget (``service.core.admission``) and is held to its rates."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.service.fakes import Clock, FakeFactory, png
from vitserve.service.core.admission import Admission
from vitserve.service.core.errors import Overloaded, RateLimited
from vitserve.service.core.metrics import Metrics


def test_the_fair_share_binds_only_while_others_are_active_and_the_replica_is_busy() -> None:
    clock = Clock()
    admission = Admission(max_in_flight=16, client_limit=16, max_url_fetches=16, metrics=Metrics(), clock=clock)
    with admission.admit("a", 16, 0):  # alone: the whole budget
        assert admission.fair_share() == 16 and not admission.contended("a")
    with admission.admit("a", 12, 0):
        admission.arrive("b")
        assert admission.fair_share() == 8
        assert admission.contended("a") and admission.contended("b")  # 12 of 16 in progress, two clients
        with pytest.raises(RateLimited, match="2 clients share it, 8 images each"):
            admission._check("a", 1, 0)  # over its share while b waits
        with admission.admit("b", 4, 0), pytest.raises(Overloaded):  # b is within its share: admitted
            admission._check("b", 1, 0)  # the whole budget is in use
        clock.now += 3  # b went quiet: after the window, a is alone again
        assert admission.active() == 1 and not admission.contended("a")
        admission._check("a", 4, 0)
    for other in "bcd":
        admission.arrive(other)
    with admission.admit("a", 4, 0):  # four clients: a share of 4 each
        admission._check("a", 4, 0)  # over its share, but 8 of 16 in progress is not busy: work-conserving
        assert not admission.contended("a")
    with admission.admit("a", 8, 0), pytest.raises(RateLimited, match="4 clients share it, 4 images each"):
        admission._check("a", 1, 0)  # over its share, and busy: the others' waiting images go first
    assert admission.in_flight == 0 and not admission.by_client


@pytest.mark.anyio
async def test_a_lone_client_is_never_rate_limited(serve: Any) -> None:
    """One upstream application alone on a replica: 300 requests as fast as it can, six times the old 50/s cap
    after its 100-request burst, every one of them answered."""
    async with serve(max_delay_ms=1) as (client, _):
        started = time.monotonic()
        codes: Counter[int] = Counter()
        for _ in range(15):
            answers = await asyncio.gather(*(client.post("/classify", files={"file": png(i)}) for i in range(20)))
            codes.update(a.status_code for a in answers)
        took_s = time.monotonic() - started
    print(f"300 requests in {took_s:.2f} s ({300 / took_s:.0f}/s)")
    assert codes == {200: 300}


@pytest.mark.anyio
async def test_a_lone_client_may_hold_the_whole_admission_budget(serve: Any, factory: FakeFactory) -> None:
    factory.delay_s = 0.2
    async with serve(queue_size=24, max_batch_size=8, max_images=8) as (client, _):
        files = [("file", png(i)) for i in range(8)]
        answers = await asyncio.gather(*(client.post("/classify", files=files) for _ in range(4)))
    # 32 images of a budget of 32 (the former fixed share, half of it, refused two of these four)
    assert [a.status_code for a in answers] == [200] * 4


async def _greedy(client: httpx.AsyncClient, name: str, served: Counter[str], until: float) -> None:
    """One worker of a client that always wants more: one image at a time, again at once when refused."""
    while time.monotonic() < until:
        r = await client.post("/classify", files={"file": png(1)}, headers={"x-client": name})
        if r.status_code == 200:
            served[name] += 1
        else:
            assert r.status_code in (429, 503), r.text
            await asyncio.sleep(0.005)


@pytest.mark.anyio
async def test_two_greedy_clients_each_get_half_of_the_replica(serve: Any, factory: FakeFactory) -> None:
    """Both want more than their share (8 of 16 slots), one with three times the other's concurrency: each gets
    half of what is served, whatever the number of requests it keeps trying."""
    factory.delay_s = 0.01
    async with serve(client_header="x-client", queue_size=8, max_batch_size=8, max_images=1, max_delay_ms=2) as (
        client,
        _,
    ):
        served: Counter[str] = Counter()
        until = time.monotonic() + 3.0
        workers = [_greedy(client, "many", served, until) for _ in range(36)]
        workers += [_greedy(client, "few", served, until) for _ in range(12)]
        await asyncio.gather(*workers)
    total = served["many"] + served["few"]
    print(f"served: {dict(served)}")
    assert total >= 100
    assert 0.4 <= served["few"] / total <= 0.6


@pytest.mark.anyio
async def test_a_hostile_client_over_its_share_is_refused_while_another_is_served(
    serve: Any, factory: FakeFactory
) -> None:
    factory.delay_s = 0.3
    async with serve(client_header="x-client", queue_size=24, max_batch_size=8, max_images=8, max_delay_ms=1) as (
        client,
        _,
    ):
        files = [("file", png(i)) for i in range(8)]
        polite = asyncio.create_task(client.post("/classify", files={"file": png(1)}, headers={"x-client": "polite"}))
        await asyncio.sleep(0.05)  # the polite client is in: both are active now
        hostile = await asyncio.gather(
            *(client.post("/classify", files=files, headers={"x-client": "hostile"}) for _ in range(4))
        )
        again = await client.post("/classify", files={"file": png(2)}, headers={"x-client": "polite"})
        metrics = (await client.get("/metrics")).text
    assert (await polite).status_code == 200 and again.status_code == 200
    # Two clients share 32 slots, 16 each: two of its 8-image requests fit, the others wait for the polite one.
    assert sorted(r.status_code for r in hostile) == [200, 200, 429, 429]
    refused = next(r for r in hostile if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limited" and refused.headers["retry-after"] == "1"
    assert "share" in refused.json()["error"]["message"]
    assert 'vitserve_rejections_total{reason="fair_share"}' in metrics
