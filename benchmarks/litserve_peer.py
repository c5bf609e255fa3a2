"""The LitServe peer servers: a ``LitAPI`` per ``peer_servers.PeerKind``, configured as LitServe's docs show.

LitServe runs ``setup`` and the request steps in a spawned inference worker (the API object is pickled to it),
behind a uvicorn API server process: ``decode_request`` per request (the upload → a preprocessed image),
``batch`` (up to 8 within 10 ms), ``predict`` (one forward), ``unbatch``, ``encode_response`` (top-k JSON).
Imported only by the peer server processes: LitServe is a benchmark-only dependency.

No ``from __future__ import annotations`` here: LitServe reads ``decode_request``'s annotation at run time, and
``Request`` there (the class, not a string) makes it parse a multipart body and hand over the form.
"""

from typing import Any

import litserve as ls
import numpy as np
from fastapi import Request

from vitserve.benchmarks.peer_servers import (
    DEFAULT_TOP_K,
    LITSERVE_BATCH_TIMEOUT_S,
    LITSERVE_MAX_BATCH_SIZE,
    PREDICT_PATH,
    REQUEST_TIMEOUT_S,
    PeerKind,
    ServerArgs,
    decode,
    load_model,
    predictions,
)

Decoded = tuple[np.ndarray, int]  # (the preprocessed image, its top_k)
NO_OP_ANSWER: dict[str, Any] = {"predictions": [{"label": "none", "index": 0, "score": 1.0}]}


def _top_k(request: Request) -> int:
    return int(request.get("top_k", DEFAULT_TOP_K))


class ClassifierAPI(ls.LitAPI):
    """timm's ViT (PyTorch eager or OpenVINO, per ``kind.runner``) on a batch of uploads."""

    def __init__(self, kind: PeerKind, args: ServerArgs) -> None:
        super().__init__(
            max_batch_size=LITSERVE_MAX_BATCH_SIZE, batch_timeout=LITSERVE_BATCH_TIMEOUT_S, api_path=PREDICT_PATH
        )
        self.kind = kind
        self.args = args

    def setup(self, device: str) -> None:
        loaded = load_model(self.kind, self.args)
        self.run, self.card = loaded.run, loaded.card

    def decode_request(self, request: Request) -> Decoded:  # the form, see the module's docstring
        return decode(request["file"].file.read(), self.card.data), _top_k(request)

    def batch(self, inputs: list[Decoded]) -> tuple[np.ndarray, list[int]]:
        return np.stack([image for image, _ in inputs]), [k for _, k in inputs]

    def predict(self, x: tuple[np.ndarray, list[int]]) -> tuple[np.ndarray, list[int]]:
        images, ks = x
        return self.run(images), ks

    def unbatch(self, output: tuple[np.ndarray, list[int]]) -> list[tuple[np.ndarray, int]]:
        logits, ks = output
        return list(zip(logits, ks, strict=True))

    def encode_response(self, output: tuple[np.ndarray, int]) -> dict[str, Any]:
        logits, k = output
        return predictions(logits, k, self.card.labels)


class NoOpAPI(ls.LitAPI):
    """The same configuration and request path with no model: answers a constant. Its latency is LitServe's."""

    def __init__(self) -> None:
        super().__init__(
            max_batch_size=LITSERVE_MAX_BATCH_SIZE, batch_timeout=LITSERVE_BATCH_TIMEOUT_S, api_path=PREDICT_PATH
        )

    def setup(self, device: str) -> None:
        pass

    def decode_request(self, request: Request) -> int:
        return _top_k(request)

    def batch(self, inputs: list[int]) -> list[int]:
        return inputs

    def predict(self, x: list[int]) -> list[int]:
        return x

    def unbatch(self, output: list[int]) -> list[int]:
        return output

    def encode_response(self, output: int) -> dict[str, Any]:
        return NO_OP_ANSWER


def serve_litserve(kind: PeerKind, args: ServerArgs, port: int) -> None:
    api = NoOpAPI() if kind.role == "overhead" else ClassifierAPI(kind, args)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=REQUEST_TIMEOUT_S)
    server.run(host="127.0.0.1", port=port, generate_client_file=False, log_level="warning")
