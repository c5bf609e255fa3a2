"""Inference: every caller (the service, ``pipeline``, ``vitserve predict``, the evaluator, the benchmarks)
predicts through this package.

``engine`` (the ``Engine`` protocol, the MindSpore engine and the backend choice), ``onnx_engine`` and
``openvino_engine`` (the CPU engines), ``onnx_export`` and ``quantize`` (the ONNX graph and its int8 form),
``export_cache`` (exports kept inside a store version), ``postprocess`` (softmax, top-k, labels) and
``pipeline`` (images in, labels out). Imports vit and model_store.
"""
