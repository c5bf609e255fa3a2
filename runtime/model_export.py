"""A store version exported as a model repository that other servers load: Triton (ONNX) or OVMS (OpenVINO IR).

The graphs are the ones the service itself runs (``export_cache``: the fp32 ONNX export and its dynamic int8
quantisation); this module only lays them out, with what a client needs beside them. For ``name`` version ``v``::

    DIR/<name>/config.pbtxt            Triton: platform onnxruntime_onnx, dynamic batch, labels for classification
    DIR/<name>/labels.txt              class names, one per line in index order (Triton's label_filename)
    DIR/<name>/<v>/model.onnx          the graph (format onnx)
    DIR/<name>/<v>/model.xml, .bin     the OpenVINO IR (format openvino; OVMS reads <name>/<v>/*.xml)
    DIR/<name>/<v>/labels.json         class names as a JSON list
    DIR/<name>/<v>/preprocessing.json  the card's DataConfig, input/output names and layout
    DIR/<name>/<v>/card.json           the version's model card (lineage, metrics)
    DIR/config.json                    OVMS's model_config_list (format openvino), base_path relative to DIR

The input is ``(N, 3, H, W)`` float32 after the preprocessing in ``preprocessing.json`` (resize the shorter
side to ``int(img_size / crop_pct)``, centre crop, scale to [0, 1], normalise by mean and std); the output is
``(N, num_classes)`` float32 logits.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vitserve.model_store.card import Card, check_labels
from vitserve.model_store.store import ModelStore
from vitserve.vit.files import write_text_atomic

log = logging.getLogger(__name__)

ExportFormat = Literal["onnx", "openvino"]
FORMATS: tuple[str, ...] = ("onnx", "openvino")
TRITON_MAX_BATCH = 64  # Triton's dynamic batcher bound; the graph's batch axis itself is unbounded


class ExportRefused(ValueError):
    """An export this build cannot make (format × precision), or a destination it will not overwrite."""


@dataclass(frozen=True)
class ExportResult:
    """What was written: the repository root, the model's version directory and every file in it."""

    root: Path
    version_dir: Path
    format: str
    precision: str
    input_name: str
    output_name: str
    files: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "root": str(self.root),
            "version_dir": str(self.version_dir),
            "format": self.format,
            "precision": self.precision,
            "input": self.input_name,
            "output": self.output_name,
            "files": [str(p) for p in self.files],
        }


def export_version(
    store: ModelStore,
    card: Card,
    out: Path,
    *,
    fmt: str = "onnx",
    precision: str = "fp32",
    name: str | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write ``card``'s version under ``out`` in the layout above; returns what was written.

    Raises ``ExportRefused`` for an unknown format or precision, int8 with OpenVINO (the int8 graph is ONNX
    Runtime's dynamic quantisation, which OpenVINO does not run as int8), labels that cannot be one line each of
    ``labels.txt``, or an existing version directory without ``overwrite``.
    """
    from vitserve.runtime.export_cache import PRECISIONS, cached_graph

    _check_labels(card)
    if fmt not in FORMATS:
        raise ExportRefused(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise ExportRefused(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    if fmt == "openvino" and precision != "fp32":
        raise ExportRefused(f"precision {precision} is ONNX Runtime's graph; export it with --format onnx")
    name = name or card.name
    model_dir = out / name
    version_dir = model_dir / str(card.version)
    if version_dir.exists():
        if not overwrite:
            raise ExportRefused(f"{version_dir} exists; remove it or pass overwrite (--force)")
        shutil.rmtree(version_dir)
    version_dir.mkdir(parents=True)
    source = cached_graph(store, card, precision)  # the verified bytes: what is copied is what was checked
    input_name, output_name = _io_names(source.model)
    if fmt == "onnx":
        (version_dir / "model.onnx").write_bytes(source.model)
        write_text_atomic(model_dir / "config.pbtxt", triton_config(name, card, input_name, output_name))
    else:
        _write_ir(source.model, version_dir / "model.xml")
        write_text_atomic(out / "config.json", json.dumps(ovms_config(out, name), indent=2) + "\n")
    write_text_atomic(model_dir / "labels.txt", "".join(f"{label}\n" for label in card.labels))
    _write_sidecars(version_dir, card, fmt, precision, input_name, output_name)
    files = sorted(p for p in out.rglob("*") if p.is_file() and (p.parent == out or model_dir in p.parents))
    log.info("exported %s as %s %s to %s", card.ref, fmt, precision, version_dir)
    return ExportResult(out, version_dir, fmt, precision, input_name, output_name, files)


def triton_config(name: str, card: Card, input_name: str, output_name: str) -> str:
    """Triton's ``config.pbtxt``: ONNX Runtime backend, dynamic batching, labels for the classification
    extension (``label_filename``)."""
    c = card.config
    return f"""name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {TRITON_MAX_BATCH}
input [
  {{
    name: "{input_name}"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ {c.in_chans}, {c.img_size}, {c.img_size} ]
  }}
]
output [
  {{
    name: "{output_name}"
    data_type: TYPE_FP32
    dims: [ {c.num_classes} ]
    label_filename: "labels.txt"
  }}
]
version_policy: {{ specific: {{ versions: [ {card.version} ] }} }}
dynamic_batching {{ }}
"""


def ovms_config(out: Path, name: str) -> dict[str, object]:
    """OVMS's ``config.json``: every model directory under ``out`` (one entry per name), paths relative to it."""
    existing: list[dict[str, object]] = []
    path = out / "config.json"
    if path.is_file():
        try:
            existing = list(json.loads(path.read_text(encoding="utf-8")).get("model_config_list", []))
        except (ValueError, AttributeError):
            log.warning("%s is not OVMS JSON: writing a new one", path)
    kept = [entry for entry in existing if _entry_name(entry) != name]
    return {"model_config_list": [*kept, {"config": {"name": name, "base_path": name}}]}


def _entry_name(entry: object) -> object:
    return entry.get("config", {}).get("name") if isinstance(entry, dict) else None


def _check_labels(card: Card) -> None:
    """Refuse labels that would not be exactly one line each of ``labels.txt`` (a card built in memory is not
    checked by the store): a newline in one would shift the names of every class after it."""
    try:
        check_labels(card.labels)
    except ValueError as err:
        raise ExportRefused(f"{card.ref}: {err}; labels.txt holds one label per line") from err


def _io_names(model: bytes) -> tuple[str, str]:
    import onnx

    graph = onnx.load_model_from_string(model).graph
    initialisers = {init.name for init in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initialisers]
    return inputs[0], graph.output[0].name


def _write_ir(model: bytes, xml: Path) -> None:
    """The ONNX graph converted to OpenVINO IR, weights kept fp32 (the service runs fp32 unless told bf16)."""
    import openvino as ov

    ov.save_model(ov.convert_model(io.BytesIO(model)), str(xml), compress_to_fp16=False)


def _write_sidecars(version_dir: Path, card: Card, fmt: str, precision: str, input_name: str, output_name: str) -> None:
    preprocessing = {
        **card.data.to_dict(),
        "input": {
            "name": input_name,
            "layout": "NCHW",
            "dtype": "float32",
            "shape": [-1, *card.input_shape],
        },
        "output": {"name": output_name, "dtype": "float32", "shape": [-1, card.config.num_classes], "kind": "logits"},
        "steps": "RGB; resize shorter side to int(img_size / crop_pct) with interpolation; centre crop img_size; "
        "scale to [0, 1]; (x - mean) / std per channel",
        "format": fmt,
        "precision": precision,
    }
    write_text_atomic(version_dir / "preprocessing.json", json.dumps(preprocessing, indent=2) + "\n")
    write_text_atomic(version_dir / "labels.json", json.dumps(card.labels, ensure_ascii=False) + "\n")
    write_text_atomic(version_dir / "card.json", card.to_json())
