"""vitserve: image classification with a Vision Transformer on MindSpore, served over HTTP.

The packages, lowest layer first (each imports only those before it):

- ``vitserve.vit``: the model library (config, MindSpore model, preprocessing, weight conversion);
- ``vitserve.model_store``: versions, cards, aliases and the on-disk layout;
- ``vitserve.runtime``: inference engines, ONNX export and quantisation, postprocessing, ``pipeline``;
- ``vitserve.service``, ``vitserve.training``, ``vitserve.benchmarks``: the HTTP service, the offline trainer
  and evaluator, the measurements;
- ``vitserve.admin``: the ``vitserve`` command line.

Importing this package imports nothing else.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vitserve")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
