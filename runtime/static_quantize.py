"""int8 that uses the hardware: post-training static quantisation of the fp32 export with NNCF, for OpenVINO.

Static quantisation fixes every activation's int8 range once, from calibration images, so OpenVINO runs the
GEMMs as integer kernels end to end (VNNI or AMX where the CPU has them, AVX2's ``vpmaddubsw`` elsewhere)
instead of quantising activations batch by batch as ONNX Runtime's dynamic int8 does. NNCF's transformer
preset (``ModelType.TRANSFORMER``) keeps what transformers need in float: LayerNorm, softmax, GELU, and
SmoothQuant-style scale migration for the outlier channels of the MLP input. The result is an OpenVINO IR
(``.xml`` + ``.bin``), cached inside the store version by ``runtime.export_cache``; its accuracy is measured,
never assumed (``benchmarks.precision_check``), and serving it is an opt-in per version behind that gate.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

MIN_CALIBRATION_IMAGES = 8  # fewer gives ranges that clip ordinary images (NNCF's default subset is 300)


def quantize_static_int8(src: Path, dst: Path, calibration: np.ndarray, *, batch_size: int = 8) -> None:
    """Write the int8 form of the ONNX model ``src`` as an OpenVINO IR at ``dst`` (``.xml``; ``.bin`` beside it).

    ``calibration`` is ``(N, C, H, W)`` float32, preprocessed exactly as the service preprocesses requests.
    Raises ``ValueError`` with fewer than ``MIN_CALIBRATION_IMAGES`` images.
    """
    import nncf
    import openvino as ov

    if calibration.ndim != 4 or len(calibration) < MIN_CALIBRATION_IMAGES:
        raise ValueError(
            f"static int8 needs at least {MIN_CALIBRATION_IMAGES} calibration images (N, C, H, W); "
            f"got shape {calibration.shape}"
        )
    model = ov.Core().read_model(str(src))
    batches: Sequence[np.ndarray] = [calibration[i : i + batch_size] for i in range(0, len(calibration), batch_size)]
    quantized = nncf.quantize(
        model,
        nncf.Dataset(batches),
        model_type=nncf.ModelType.TRANSFORMER,
        preset=nncf.QuantizationPreset.MIXED,  # symmetric weights, asymmetric activations (GELU's output)
        subset_size=len(batches),  # NNCF counts dataset items: batches here
    )
    dst.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(dst), compress_to_fp16=False)
    logger.info("static int8 IR written to %s from %d calibration images", dst, len(calibration))
