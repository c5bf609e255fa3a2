"""The committed gRPC messages match the .proto, and live in a pool of their own (Triton's client library
defines the same names in protobuf's default pool; both must import in one process)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from tests.e2e.e2e_server import REPO
from vitserve.service.v2.proto import grpc_predict_v2_pb2 as pb


def _descriptor(module_path: Path) -> descriptor_pb2.FileDescriptorProto:
    spec = importlib.util.spec_from_file_location("generated_pb2", module_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    proto = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(proto)
    return proto


def test_committed_module_matches_the_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from gen_protos import generate
    finally:
        sys.path.remove(str(REPO / "scripts"))
    generate(tmp_path)
    fresh = _descriptor(tmp_path / "grpc_predict_v2_pb2.py")
    committed = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(committed)
    assert fresh == committed, "service/v2/proto is stale: run python scripts/gen_protos.py"


def test_messages_stay_out_of_the_default_pool() -> None:
    assert pb.DESCRIPTOR.pool is not descriptor_pool.Default()
    assert pb.ModelInferRequest.DESCRIPTOR.full_name == "inference.ModelInferRequest"
    assert pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name == "inference.GRPCInferenceService"
