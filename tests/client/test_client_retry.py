"""The client's retry policy on 503 (Retry-After honoured, bounded) and its error typing, on scripted answers;
every scenario on both faces, which must behave identically."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.client.scenario import OK, Face, Server, busy
from vitserve.client import ConnectionFailed, NotFound, RetryPolicy, ServerError, Unavailable


def test_503_is_retried_after_retry_after_then_succeeds(face: Face) -> None:
    server = Server(busy(), busy(), httpx.Response(200, json=OK))
    result = face(server, lambda client: client.classify([b"a", b"b"], top_k=2))
    assert len(server.seen) == 3 and result.model == "m"
    for request in server.seen:  # each try sends the whole request again
        assert request.url.params["top_k"] == "2" and request.read().count(b'name="file"') == 2


def test_retries_are_bounded_and_waits_capped(face: Face) -> None:
    server = Server(*[busy("100")] * 3)
    started = time.monotonic()
    with pytest.raises(Unavailable) as err:
        face(server, lambda client: client.classify(b"x"), retry=RetryPolicy(retries=2, max_wait_s=0.05))
    assert len(server.seen) == 3 and time.monotonic() - started < 1.0  # Retry-After 100 s capped at 0.05 s
    assert (err.value.status_code, err.value.code, err.value.retry_after_s) == (503, "overloaded", 100.0)


def test_without_retry_after_the_wait_doubles_from_backoff(face: Face) -> None:
    server = Server(busy(None), busy(None), httpx.Response(200, json={"models": []}))
    started = time.monotonic()
    assert face(server, lambda client: client.models(), retry=RetryPolicy(backoff_s=0.05)) == []
    assert len(server.seen) == 3 and time.monotonic() - started >= 0.15  # 0.05 s, then 0.1 s


def test_no_retry_for_other_errors_and_unknown_bodies(face: Face) -> None:
    server = Server(httpx.Response(502, text="bad gateway"))
    with pytest.raises(ServerError) as err:
        face(server, lambda client: client.models())
    assert len(server.seen) == 1 and err.value.status_code == 502 and "bad gateway" in err.value.message


def test_errors_keep_the_service_code_and_request_id(face: Face) -> None:
    body = {"error": {"code": "model_not_found", "message": "no model 'x'"}}
    server = Server(httpx.Response(404, json=body, headers={"X-Request-Id": "r-1"}))
    with pytest.raises(NotFound) as err:
        face(server, lambda client: client.model("x"))
    assert (err.value.code, err.value.message, err.value.request_id) == ("model_not_found", "no model 'x'", "r-1")


@pytest.mark.parametrize("call", ["models", "ready"])
def test_no_answer_is_connection_failed(face: Face, call: str) -> None:
    server = Server(httpx.ConnectError("connection refused"))
    with pytest.raises(ConnectionFailed) as err:
        face(server, lambda client: getattr(client, call)())
    assert err.value.code == "connection_failed" and "http://test" in str(err.value)
    assert isinstance(err.value.__cause__, httpx.ConnectError)


def test_ready_is_an_answer_not_an_error(face: Face) -> None:
    server = Server(httpx.Response(200), busy())
    assert face(server, lambda client: client.ready()) is True
    assert face(server, lambda client: client.ready()) is False
    assert [request.url.path for request in server.seen] == ["/readyz", "/readyz"]  # a 503 is not retried here
