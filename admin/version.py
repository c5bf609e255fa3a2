"""``vitserve --version``: the installed distribution's version and the libraries that decide its numerics."""

from __future__ import annotations

from importlib import metadata

from vitserve.runtime.engine import ENGINE_KINDS


def version_string() -> str:
    """``vitserve 0.1.0 (python 3.11.x, mindspore 2.10.0, onnxruntime ..., openvino ...)``; absent ones omitted."""
    import platform

    parts = [f"python {platform.python_version()}"]
    for dist in ENGINE_KINDS:  # each engine kind is the distribution of the same name
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return f"vitserve {_own_version()} ({', '.join(parts)})"


def _own_version() -> str:
    try:
        return metadata.version("vitserve")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"
