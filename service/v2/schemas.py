"""The Open Inference Protocol's REST bodies (they are also the OpenAPI schema of the ``/v2`` routes)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

Parameters = dict[str, Any]


class RequestInput(BaseModel):
    name: str = Field(description="'image' (BYTES) or 'pixels' (FP32)")
    shape: list[int]
    datatype: str
    parameters: Parameters | None = Field(None, description="binary_data_size: bytes of this input in the body")
    data: Any = Field(
        None,
        description="row-major elements, flat or nested; BYTES elements are base64 strings (standard, URL-safe "
        'or data: URL) or {"b64": ...}; absent when the input is binary data',
    )


class RequestOutput(BaseModel):
    name: str = Field(description="'probabilities' or 'logits'")
    parameters: Parameters | None = Field(
        None, description="classification: k → BYTES 'value:index:label'; binary_data: true → raw bytes in the body"
    )


class InferRequestBody(BaseModel):
    id: str | None = None
    parameters: Parameters | None = Field(
        None, description="binary_data_output: outputs as binary data; timeout: microseconds (shortens the server's)"
    )
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = Field(None, description="absent: every output")


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any] | None = None


class InferResponseBody(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


class ServerMetadataBody(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadataBody(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadataBody(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadataBody]
    outputs: list[TensorMetadataBody]


class LiveBody(BaseModel):
    live: bool


class ReadyBody(BaseModel):
    ready: bool


class ModelReadyBody(BaseModel):
    name: str
    ready: bool


class ProtocolError(BaseModel):
    error: str


PROTOCOL_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ProtocolError, "description": text}
    for status, text in {
        400: "malformed request, tensors or image",
        404: "unknown or not loaded model/version",
        413: "too many images, bytes or pixels",
        415: "unsupported image type or content encoding",
        503: "queue full, not ready or shutting down (Retry-After)",
        504: "the request's deadline passed",
    }.items()
}


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with its ``$defs`` inlined, for an ``openapi_extra`` request body."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
