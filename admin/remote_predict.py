"""`vitserve predict --url URL IMAGE...`: classify local images on a running server through ``vitserve.client``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from vitserve.admin.errors import CommandError


def predict_remote(args: argparse.Namespace) -> int:
    """Print the server's top-k for each image, as ``vitserve predict`` prints local results (table or JSON)."""
    from vitserve.client import Client, VitserveError

    try:
        with Client(args.url) as client:
            result = client.classify(list(args.images), top_k=args.top_k, model=args.model)
    except VitserveError as err:
        raise CommandError(f"{args.url}: {err}") from err
    except OSError as err:
        raise CommandError(f"{err.filename}: {err.strerror}") from err
    rows: list[dict[str, Any]] = [
        {"image": str(image), "predictions": [vars(p) for p in r.predictions]}
        for image, r in zip(args.images, result.results, strict=True)
    ]
    if args.json:
        print(json.dumps({"model": {"name": result.model, "version": result.version}, "results": rows}, indent=2))
        return 0
    print(f"model {result.model}:{result.version} (served by {args.url})")
    for row in rows:
        print(row["image"])
        for rank, p in enumerate(row["predictions"], 1):
            print(f"  {rank}. {p['score']:.4f}  {p['label']} ({p['index']})")
    return 0
