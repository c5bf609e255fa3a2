"""Triton's own client library against a vitserve server: runs in its own environment (.venv-tritonclient,
made by scripts/install.sh dev), where vitserve is not even installed, and prints what it saw as JSON.

    .venv-tritonclient/bin/python -I tests/e2e/triton_client.py HTTP_URL GRPC_ADDR MODEL K IMAGE...

For every image: the top K of ``probabilities`` through the classification extension, and the argmax of the
full ``probabilities`` tensor, over HTTP (binary tensor data, tritonclient's default) and over gRPC.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient


def infer(module: Any, client: Any, model: str, images: list[bytes], k: int) -> dict[str, Any]:
    tensor = module.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    outputs = [module.InferRequestedOutput("probabilities", class_count=k), module.InferRequestedOutput("logits")]
    result = client.infer(model, [tensor], outputs=outputs, request_id="triton-1")
    classes = [[e.decode() for e in row] for row in result.as_numpy("probabilities")]
    logits = result.as_numpy("logits")
    response = result.get_response()
    version = response["model_version"] if isinstance(response, dict) else response.model_version
    return {"classes": classes, "argmax": [int(i) for i in logits.argmax(axis=1)], "version": version}


def main() -> None:
    http_url, grpc_addr, model, k, *paths = sys.argv[1:]
    images = [Path(p).read_bytes() for p in paths]
    http = httpclient.InferenceServerClient(http_url.removeprefix("http://"))
    grpc = grpcclient.InferenceServerClient(grpc_addr)
    report = {
        "http": {
            "live": http.is_server_live(),
            "ready": http.is_server_ready(),
            "model_ready": http.is_model_ready(model),
            "version_2_ready": http.is_model_ready(model, "2"),
            "server": http.get_server_metadata(),
            "metadata": http.get_model_metadata(model),
            **infer(httpclient, http, model, images, int(k)),
        },
        "grpc": {
            "live": grpc.is_server_live(),
            "ready": grpc.is_server_ready(),
            "model_ready": grpc.is_model_ready(model),
            "version_2_ready": grpc.is_model_ready(model, "2"),
            "server": grpc.get_server_metadata(as_json=True),
            "metadata": grpc.get_model_metadata(model, as_json=True),
            **infer(grpcclient, grpc, model, images, int(k)),
        },
        "vitserve_imported": any(name.startswith("vitserve") for name in sys.modules),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
