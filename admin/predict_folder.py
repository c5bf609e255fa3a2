"""``vitserve predict DIR --out preds.jsonl|csv``: every image under DIR, in batches on the fast CPU engine."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from vitserve.admin.errors import EXIT_NOT_FOUND, EXIT_PARTIAL, EXIT_REFUSED, CommandError
from vitserve.admin.progress import bar
from vitserve.admin.store_args import open_store, user_errors
from vitserve.model_store.errors import ModelNotFound
from vitserve.runtime.folder_predict import Predicted, Skipped

log = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (".jsonl", ".csv")


def predict_folder(args: argparse.Namespace, root: Path) -> int:
    """Classify every image under ``root``; exit 0, or ``EXIT_PARTIAL`` when some files were skipped."""
    from vitserve.runtime.engine import EngineOptions, build_engine
    from vitserve.runtime.folder_predict import find_images, predict_files

    out: Path | None = args.out
    if out is not None and out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise CommandError(f"--out {out}: the name must end in .jsonl or .csv", EXIT_REFUSED)
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be >= 1, got {args.batch_size}", EXIT_REFUSED)
    store = open_store(args)
    try:
        card = store.resolve(args.model)
    except ModelNotFound as err:
        raise CommandError(f"{err} (folder prediction runs store versions)", EXIT_NOT_FOUND) from None
    paths = find_images(root)
    if not paths:
        raise CommandError(f"{root}: no image files (extensions .jpg .png .webp ...)", EXIT_NOT_FOUND)
    with user_errors():
        engine = build_engine(args.engine, card, store, EngineOptions(batch_sizes=(args.batch_size,)))
    name = getattr(engine, "name", type(engine).__name__)
    log.info("%d images under %s with %s on %s, batches of %d", len(paths), root, card.ref, name, args.batch_size)
    skipped: list[Skipped] = []
    predicted = 0
    with bar(len(paths), f"predict {card.ref}", unit="img", quiet=args.json and out is None) as progress:
        results = predict_files(
            engine, card, paths, batch_size=args.batch_size, top_k=args.top_k, workers=args.workers,
            on_done=progress.update,
        )  # fmt: skip
        with _Sink(out) as stream:
            for item in _write(results, stream, out, root, args.top_k):
                if isinstance(item, Skipped):
                    skipped.append(item)
                else:
                    predicted += 1
    return _summary(args, card.ref, root, out, predicted, skipped)


class _Sink:
    """``out`` opened for writing, or stdout (left open)."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self.stream: IO[str] | None = None

    def __enter__(self) -> IO[str]:
        if self.out is None:
            return sys.stdout
        self.out.parent.mkdir(parents=True, exist_ok=True)
        stream = self.out.open("w", encoding="utf-8", newline="")
        self.stream = stream
        return stream

    def __exit__(self, *exc: object) -> None:
        if self.stream is not None:
            self.stream.close()


def _write(
    results: Iterable[Predicted | Skipped], stream: IO[str], out: Path | None, root: Path, top_k: int
) -> Iterable[Predicted | Skipped]:
    """Write each prediction as it comes (JSON lines, or CSV rows with ``top_k`` label/index/score columns)."""
    as_csv = out is not None and out.suffix.lower() == ".csv"
    writer = csv.writer(stream) if as_csv else None
    if writer is not None:
        writer.writerow(
            ["path", *(f"{key}_{rank}" for rank in range(1, top_k + 1) for key in ("label", "index", "score"))]
        )
    for item in results:
        if isinstance(item, Predicted):
            relative = str(item.path.relative_to(root))
            if writer is not None:
                cells = [v for p in item.predictions for v in (p["label"], p["index"], f"{p['score']:.6f}")]
                writer.writerow([relative, *cells])
            else:
                stream.write(json.dumps({"path": relative, "predictions": item.predictions}) + "\n")
        yield item


def _summary(
    args: argparse.Namespace, ref: str, root: Path, out: Path | None, predicted: int, skipped: list[Skipped]
) -> int:
    for item in skipped:
        print(f"skipped {item.path}: {item.reason}", file=sys.stderr)
    summary = {
        "model": ref,
        "folder": str(root),
        "predicted": predicted,
        "skipped": [{"path": str(s.path), "reason": s.reason} for s in skipped],
        "out": str(out) if out else None,
    }
    if args.json and out is not None:
        print(json.dumps(summary, indent=2))
    elif out is not None:
        print(f"{predicted} images classified by {ref} into {out}; {len(skipped)} unreadable skipped")
    else:
        print(f"{predicted} images classified by {ref}; {len(skipped)} unreadable skipped", file=sys.stderr)
    return EXIT_PARTIAL if skipped else 0
