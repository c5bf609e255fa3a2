"""The one router the app includes for the Open Inference Protocol."""

from __future__ import annotations

from fastapi import APIRouter

from vitserve.service.v2 import grpc_server, rest


def build_router() -> APIRouter:
    """The ``/v2`` REST routes, carrying the gRPC server's lifespan (it serves only when ``grpc_port`` is set);
    FastAPI nests a router's lifespan inside the app's, so gRPC starts once the default model is warm."""
    router = APIRouter(lifespan=grpc_server.lifespan)
    router.include_router(rest.router)
    return router
