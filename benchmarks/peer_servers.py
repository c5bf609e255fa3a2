"""Peer servers for the HTTP benchmark: the same weights and preprocessing behind LitServe and a plain FastAPI app.

    python -m vitserve.benchmarks.peer_servers --kind litserve-torch --port 8123 --store DIR --model NAME:V \\
        --threads 2 --workdir DIR

Each kind (``PEER_KINDS``) is a real server process on 127.0.0.1 answering ``POST /predict`` (a multipart
``file`` upload, an optional ``top_k`` form field) with ``{"predictions": [{"label", "index", "score"}]}`` and
``GET /health`` once the model is loaded. The model is timm's ``VisionTransformer`` built from the store
version's weights, run the way the engine benchmark's peers run it (``runners.RUNNERS``: PyTorch eager, or
OpenVINO on the plain PyTorch → ONNX export with its precision hint), held to ``--threads`` threads.
Preprocessing is the version's ``DataConfig``: a plain Pillow decode, then ``vit.preprocess.transform`` (shorter
side resized bicubic to ``resize_size``, centre crop ``img_size``, mean/std normalisation).

- ``litserve-*`` (``litserve_peer.py``): LitServe configured as its documentation shows, a ``LitAPI`` with
  ``setup``/``decode_request``/``batch``/``predict``/``unbatch``/``encode_response``, batches of up to 8 with a
  10 ms wait, one worker on the CPU; ``litserve-noop`` answers a constant (LitServe's own overhead).
- ``fastapi-torch``: one ``POST`` route as a user would write it: decode, preprocess and a ``torch.no_grad()``
  forward per request, under uvicorn with one worker.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, File, Form, UploadFile

from vitserve.model_store.card import Card
from vitserve.vit.config import DataConfig

logger = logging.getLogger(__name__)

PREDICT_PATH = "/predict"
HEALTH_PATH = "/health"
DEFAULT_TOP_K = 5
# LitServe's batching, as its documentation configures it; the same largest batch as our server's default.
LITSERVE_MAX_BATCH_SIZE = 8
LITSERVE_BATCH_TIMEOUT_S = 0.01
# A request may wait this long (our server is started with the same): 64 clients queue for a while on ViT-B/16.
REQUEST_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class PeerKind:
    name: str  # --kind
    label: str  # the benchmark row, "framework[runtime] precision"
    framework: str  # "litserve" or "fastapi"
    precision: str  # "fp32", "bf16", or "none" (a constant answer)
    # The engine benchmark's runner (``runners.RUNNERS`` label) that builds the model; None: the server builds
    # its own (fastapi-torch: a user's plain forward) or has none (litserve-noop).
    runner: str | None

    @property
    def role(self) -> str:
        """``peer`` (a model server to compare with ours) or ``overhead`` (no model: the framework alone)."""
        return "overhead" if self.precision == "none" else "peer"


PEER_KINDS: tuple[PeerKind, ...] = (
    PeerKind("litserve-torch", "litserve[torch] fp32", "litserve", "fp32", "torch[torch] fp32"),
    PeerKind("litserve-openvino", "litserve[openvino] fp32", "litserve", "fp32", "openvino[torch-export] fp32"),
    PeerKind("litserve-openvino-bf16", "litserve[openvino] bf16", "litserve", "bf16", "openvino[torch-export] bf16"),
    PeerKind("fastapi-torch", "fastapi[torch] fp32", "fastapi", "fp32", None),
    PeerKind("litserve-noop", "litserve[no-op]", "litserve", "none", None),
)


def peer_kind(name: str) -> PeerKind:
    for kind in PEER_KINDS:
        if kind.name == name:
            return kind
    raise KeyError(f"unknown peer server kind {name!r}; known: {', '.join(k.name for k in PEER_KINDS)}")


@dataclass(frozen=True)
class ServerArgs:
    """What a peer server process needs to build its model (picklable: LitServe hands it to its worker)."""

    store_root: Path
    model: str  # a store reference, name:version
    threads: int
    workdir: Path  # where the PyTorch → ONNX export is made once and reused by later servers


@dataclass(frozen=True)
class LoadedModel:
    run: Callable[[np.ndarray], np.ndarray]  # (B, 3, S, S) float32 → (B, C) logits
    precision: str
    card: Card


def load_model(kind: PeerKind, args: ServerArgs) -> LoadedModel:
    """The store version's weights as ``kind.runner`` builds them (threads, precision hint and all)."""
    from vitserve.benchmarks.runners import BenchContext, runner_spec
    from vitserve.model_store.store import ModelStore

    if kind.runner is None:
        raise ValueError(f"{kind.name} builds no engine-benchmark runner")
    store = ModelStore(args.store_root)
    card = store.resolve(args.model)
    ctx = BenchContext(store=store, card=card, threads=args.threads, batch_sizes=(1,), workdir=args.workdir)
    built = runner_spec(kind.runner).build(ctx)
    return LoadedModel(built.run, built.precision, card)


def decode(data: bytes, cfg: DataConfig) -> np.ndarray:
    """JPEG bytes → ``(3, S, S)`` float32: Pillow's full decode, then the version's resize, crop and normalisation."""
    from PIL import Image

    from vitserve.vit.preprocess import transform

    with Image.open(io.BytesIO(data)) as image:
        return transform(image.convert("RGB"), cfg)


def predictions(logits: np.ndarray, k: int, labels: Sequence[str]) -> dict[str, Any]:
    """One ``(C,)`` logit row → the JSON answer, its top ``k`` classes by softmax probability."""
    from vitserve.runtime.postprocess import top_k

    return {"predictions": [vars(p) for p in top_k(logits, k, labels)]}


def fastapi_app(args: ServerArgs) -> FastAPI:
    """A plain FastAPI + PyTorch server: timm's model in eval mode, one route, a forward per request."""
    import torch

    from vitserve.benchmarks.peers import timm_model
    from vitserve.model_store.store import ModelStore

    torch.set_num_threads(args.threads)
    state, card = ModelStore(args.store_root).load(args.model)
    model = timm_model(card.config, state)
    app = FastAPI()

    @app.post(PREDICT_PATH)
    async def predict(file: UploadFile = File(...), top_k: int = Form(DEFAULT_TOP_K)) -> dict[str, Any]:  # noqa: B008
        x = torch.from_numpy(decode(await file.read(), card.data)).unsqueeze(0)
        with torch.no_grad():
            logits = model(x)[0].numpy()
        return predictions(logits, top_k, card.labels)

    @app.get(HEALTH_PATH)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve(kind: PeerKind, args: ServerArgs, port: int) -> None:
    """Run ``kind`` on 127.0.0.1:``port`` until terminated."""
    if kind.framework == "litserve":
        from vitserve.benchmarks.litserve_peer import serve_litserve

        serve_litserve(kind, args, port)
    else:
        import uvicorn

        uvicorn.run(fastapi_app(args), host="127.0.0.1", port=port, workers=1, log_level="warning")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vitserve.benchmarks.peer_servers", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--kind", required=True, choices=[k.name for k in PEER_KINDS])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", type=Path, required=True, help="the model store's root")
    parser.add_argument("--model", required=True, help="the store version to serve (name:version)")
    parser.add_argument("--threads", type=int, required=True, help="intra-op threads of the model")
    parser.add_argument("--workdir", type=Path, required=True, help="scratch directory (the ONNX export)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(peer_kind(args.kind), ServerArgs(args.store, args.model, args.threads, args.workdir), args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
