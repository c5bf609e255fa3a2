"""What bounds the gRPC door, as REST is bounded: calls at once, the receive deadline, the body budget shared with
HTTP, the per-client rate on every call but the probes (checked before the message is read), the caller's
identity, and error messages that name only what the caller asked for. A real channel on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from tests.service.fakes import png
from tests.service.test_v2_grpc import RESPONSES, SERVICE, grpc_app, image_request, until
from vitserve.model_store.errors import IntegrityError, ModelNotFound
from vitserve.service.core.client_budgets import ClientBudgets
from vitserve.service.core.errors import DOMAIN_ERRORS, LoadFailed, RateLimited, ServiceError
from vitserve.service.observability.request_context import RequestRecord
from vitserve.service.v2.grpc_calls import GRPC_CODES, grpc_code, peer_address, refusal
from vitserve.service.v2.proto import grpc_predict_v2_pb2 as pb

pytestmark = pytest.mark.anyio

SEPARATE = [("grpc.use_local_subchannel_pool", 1)]  # a channel of its own: a new connection, a new source port


async def call(channel: grpc.aio.Channel, method: str, request: Any, metadata: tuple[tuple[str, str], ...] = ()) -> Any:
    multicallable = channel.unary_unary(
        SERVICE + method,
        request_serializer=type(request).SerializeToString,
        response_deserializer=RESPONSES[method].FromString,
    )
    return await multicallable(request, metadata=metadata, timeout=10)


async def refused(coroutine: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await coroutine
    return err.value


def fixed_rate(app: Any, burst: int = 2) -> None:
    """A request rate that refuses as soon as the burst is spent, whoever else is calling (read at each call)."""
    app.state.client_rates = ClientBudgets(rate=0.001, burst=burst)


async def test_calls_beyond_the_concurrent_bound_are_refused_and_the_server_goes_on(serve: Any, factory: Any) -> None:
    factory.delay_s = 0.3
    async with grpc_app(serve, grpc_max_concurrent_rpcs=2) as (stub, _, _):
        outcomes = await asyncio.gather(
            *(stub("ModelInfer", image_request(png(i))) for i in range(6)), return_exceptions=True
        )
        after = await stub("ModelInfer", image_request(png(7)))
    answered = [o for o in outcomes if isinstance(o, pb.ModelInferResponse)]
    codes = [o.code() for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert 1 <= len(answered) <= 2 and len(codes) == 6 - len(answered)
    assert set(codes) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert after.model_name == "tiny"


async def test_a_message_that_does_not_arrive_in_time_is_cut_off_and_frees_its_slot(serve: Any) -> None:
    never = asyncio.Event()

    async def nothing() -> AsyncIterator[pb.ModelInferRequest]:
        await never.wait()
        yield image_request(png(1))

    async with grpc_app(serve, grpc_max_concurrent_rpcs=1, body_timeout_s=0.5) as (stub, _, _):
        silent = stub.channel.stream_unary(
            SERVICE + "ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )(nothing(), timeout=10)
        await asyncio.sleep(0.1)
        busy = await refused(stub("ServerMetadata", pb.ServerMetadataRequest()))  # the one slot is held
        late = await refused(silent)
        after = await stub("ServerMetadata", pb.ServerMetadataRequest())
    assert busy.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "0.5 s" in (late.details() or "")
    assert after.name == "vitserve"


async def test_grpc_messages_share_the_http_body_budget(serve: Any) -> None:
    cap = 64 * 1024
    release = asyncio.Event()

    async def trickle() -> AsyncIterator[bytes]:
        yield b"{" * 1024
        await release.wait()
        yield b"x" * (cap - 1024)

    async with grpc_app(serve, max_body_bytes=cap, max_bodies_bytes=cap) as (stub, client, app):
        budget = app.state.body_budget
        held = asyncio.create_task(
            client.post("/v2/models/tiny/infer", content=trickle(), headers={"content-length": str(cap)})
        )
        await until(lambda: budget.held == cap)  # an HTTP body holds the whole budget, Content-Length at once
        busy = await refused(stub("ModelInfer", image_request(png(1))))
        release.set()
        rest = await held
        await until(lambda: budget.held == 0)
        after = await stub("ModelInfer", image_request(png(1)))
        assert budget.held == 0  # given back once answered
    assert busy.code() == grpc.StatusCode.UNAVAILABLE
    assert ("retry-after", "1") in tuple(busy.trailing_metadata() or ())
    assert rest.status_code == 400 and after.model_name == "tiny"


async def test_the_rate_counts_every_call_but_the_probes(serve: Any) -> None:
    async with grpc_app(serve) as (stub, _, app):
        fixed_rate(app)
        for _ in range(2):
            await stub("ModelMetadata", pb.ModelMetadataRequest(name="tiny"))
        limited = [
            await refused(stub("ModelMetadata", pb.ModelMetadataRequest(name="tiny"))),
            await refused(stub("ModelReady", pb.ModelReadyRequest(name="tiny"))),
            await refused(stub("ServerMetadata", pb.ServerMetadataRequest())),
            await refused(stub("ModelInfer", image_request(png(1)))),
        ]
        live = await stub("ServerLive", pb.ServerLiveRequest())
        ready = await stub("ServerReady", pb.ServerReadyRequest())
    assert {err.code() for err in limited} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert all(dict(err.trailing_metadata() or ()).get("retry-after") for err in limited)
    assert live.live and ready.ready


async def test_the_rate_is_checked_before_the_message_is_read(serve: Any) -> None:
    never = asyncio.Event()

    async def nothing() -> AsyncIterator[pb.ModelInferRequest]:
        await never.wait()
        yield image_request(png(1))

    async with grpc_app(serve) as (stub, _, app):
        fixed_rate(app, burst=1)
        await stub("ServerMetadata", pb.ServerMetadataRequest())
        started = asyncio.get_running_loop().time()
        limited = await refused(
            stub.channel.stream_unary(
                SERVICE + "ModelInfer",
                request_serializer=pb.ModelInferRequest.SerializeToString,
                response_deserializer=pb.ModelInferResponse.FromString,
            )(nothing(), timeout=10)
        )
        waited = asyncio.get_running_loop().time() - started
    # Refused with its message never sent (the receive deadline is 30 s; the call's own 10 s).
    assert limited.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and waited < 5


async def test_a_forwarded_for_header_does_not_make_a_new_client(serve: Any) -> None:
    async with grpc_app(serve, client_header="x-forwarded-for") as (_, _, app):
        fixed_rate(app)
        target = f"127.0.0.1:{app.state.grpc_port}"
        outcomes = []
        for i in range(3):  # a new connection and a new claimed address each time: still one caller
            async with grpc.aio.insecure_channel(target, options=SEPARATE) as channel:
                metadata = (("x-forwarded-for", f"203.0.113.{i}"),)
                try:
                    await call(channel, "ModelMetadata", pb.ModelMetadataRequest(name="tiny"), metadata)
                    outcomes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as err:
                    outcomes.append(err.code())
    assert outcomes == [grpc.StatusCode.OK, grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED]


async def test_behind_a_trusted_grpc_proxy_its_header_names_the_client(serve: Any) -> None:
    async with grpc_app(serve, grpc_client_header="x-forwarded-for") as (stub, _, app):
        fixed_rate(app, burst=1)
        for i in range(3):  # three clients behind the proxy, one call each
            await call(
                stub.channel,
                "ModelMetadata",
                pb.ModelMetadataRequest(name="tiny"),
                (("x-forwarded-for", f"10.0.0.{i}"),),
            )
        again = await refused(
            call(
                stub.channel, "ModelMetadata", pb.ModelMetadataRequest(name="tiny"), (("x-forwarded-for", "10.0.0.1"),)
            )
        )
    assert again.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_an_unknown_model_is_not_found_naming_only_what_was_asked(serve: Any) -> None:
    unknown = image_request(png(1))
    unknown.model_name = "nosuch"
    async with grpc_app(serve) as (stub, _, _):
        errors = {
            "nosuch": await refused(stub("ModelMetadata", pb.ModelMetadataRequest(name="nosuch"))),
            "ready": await refused(stub("ModelReady", pb.ModelReadyRequest(name="nosuch"))),
            "infer": await refused(stub("ModelInfer", unknown)),
            "version": await refused(stub("ModelMetadata", pb.ModelMetadataRequest(name="tiny", version="9"))),
            "alias": await refused(stub("ModelMetadata", pb.ModelMetadataRequest(name="tiny", version="gone"))),
        }
    assert {name: err.code() for name, err in errors.items()} == dict.fromkeys(errors, grpc.StatusCode.NOT_FOUND)
    assert errors["nosuch"].details() == errors["ready"].details() == "model 'nosuch' not found"
    assert errors["infer"].details() == "model 'nosuch' not found"
    assert errors["version"].details() == "model 'tiny:9' not found"
    assert errors["alias"].details() == "model 'tiny@gone' not found"
    for err in errors.values():
        assert "production" not in (err.details() or "") and "1, 2" not in (err.details() or "")


def test_every_error_goes_through_one_table_with_no_server_path() -> None:
    statuses = {status for _, _, status in DOMAIN_ERRORS}
    statuses |= {cls.status for cls in _subclasses(ServiceError)}
    assert statuses <= set(GRPC_CODES), statuses - set(GRPC_CODES)
    record = RequestRecord("r-1", path="/inference.GRPCInferenceService/ModelInfer")
    code, message, trailers = refusal(LoadFailed("cannot read /srv/store/tiny/3/model.ckpt: denied"), record)
    assert (code, message) == (grpc.StatusCode.FAILED_PRECONDITION, "cannot read model.ckpt: denied")
    assert (record.status, record.error_code, record.grpc_status) == (409, "load_failed", "FAILED_PRECONDITION")
    code, message, _ = refusal(IntegrityError("tiny:3: /srv/store/tiny/3/model.ckpt sha256 mismatch"), record)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "/srv" not in message
    code, message, trailers = refusal(RateLimited("slow down", retry_after_s=2.2), record)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and ("retry-after", "3") in trailers
    code, message, trailers = refusal(OSError("/srv/secret/file: gone"), record)  # a bug
    assert code == grpc.StatusCode.INTERNAL and message == "internal error (incident r-1); see the server log"
    assert ("x-request-id", "r-1") in trailers
    assert grpc_code(418) == grpc.StatusCode.INVALID_ARGUMENT and grpc_code(507) == grpc.StatusCode.INTERNAL
    assert refusal(ModelNotFound("x"), record)[0] == grpc.StatusCode.NOT_FOUND


def test_a_peer_is_its_address_without_the_port() -> None:
    assert peer_address("ipv4:10.0.0.7:53114") == ("10.0.0.7", "10.0.0.7:53114")
    assert peer_address("ipv6:%5B::1%5D:53114") == ("::1", "[::1]:53114")
    assert peer_address("ipv6:[2001:db8::5]:80") == ("2001:db8::5", "[2001:db8::5]:80")
    assert peer_address("unix:/run/vitserve.sock") == ("unix", "unix")


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found
