"""The client's core without I/O: a call, driven by hand, yields the reads, requests and sleeps it needs and
decides everything else (request building, retries, error mapping) itself."""

from __future__ import annotations

import httpx
import pytest

from tests.client.scenario import OK, busy
from vitserve.client import ConnectionFailed, RetryPolicy
from vitserve.client.exchange import Calls, ReadImages, Sleep


def calls() -> Calls:
    http = httpx.Client(base_url="http://test")  # only its build_request is used: nothing is sent
    return Calls(http, {"retry": RetryPolicy(backoff_s=0.5, max_wait_s=0.8)})


def test_a_call_yields_its_io_and_decides_the_retries() -> None:
    call = calls().classify([b"a"], {"top_k": 2, "model": None})
    read = next(call)
    assert isinstance(read, ReadImages) and read.read() == [b"a"]
    steps = [call.send(read.read())]
    for reply in [busy(None), None, busy(None), None, busy("0.25"), None]:
        steps.append(call.send(reply))
    with pytest.raises(StopIteration) as done:
        call.send(httpx.Response(200, json=OK))
    requests = steps[::2]
    assert all(isinstance(r, httpx.Request) and str(r.url) == "http://test/classify?top_k=2" for r in requests)
    assert steps[1::2] == [Sleep(0.5), Sleep(0.8), Sleep(0.25)]  # doubling, capped, then Retry-After
    assert done.value.value.model == "m"


def test_a_failed_send_becomes_connection_failed() -> None:
    call = calls().models()
    assert isinstance(next(call), httpx.Request)
    with pytest.raises(ConnectionFailed, match="ReadTimeout talking to http://test"):
        call.send(httpx.ReadTimeout("timed out"))
