#!/usr/bin/env bash
# Creates ./.venv-triton: Triton Inference Server (as bundled in the nvidia-pytriton wheel) and what the Triton
# peer of the HTTP benchmark needs (benchmarks/triton_peer.py, benchmarks/oip_load.py; benchmarks/README.md,
# "Triton"). Its own environment: PyTriton pins protobuf<7 (MindSpore 2.10 needs protobuf>=7.34) and numpy<2.
#   bash scripts/install_triton_peer.sh        then: python -m vitserve.benchmarks.http_bench --peers triton ...
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
[ -x .venv-triton/bin/python ] || "$python" -m venv .venv-triton
# The same OpenVINO as the service's environment when there is one, so both servers run the same kernels.
openvino=$(.venv/bin/python -c 'from importlib.metadata import version; print(version("openvino"))' 2>/dev/null || true)
# nvidia-pytriton 0.7.0 bundles tritonserver 2.51 with its Python backend and brings tritonclient[all] (the load
# generator's client library); Triton's OpenVINO and ONNX Runtime backends are not in the wheel.
.venv-triton/bin/pip install -q "nvidia-pytriton==0.7.0" "openvino${openvino:+==$openvino}" "numpy<2" "Pillow"
# The Python-backend stub for this interpreter's version links the system's libpython (Debian's libpython3.11).
site=$(.venv-triton/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
stub=$(ls "$site"/pytriton/tritonserver/python_backend_stubs/"$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"/triton_python_backend_stub)
if ldd "$stub" | grep -q "libpython.*not found"; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$(ldd "$stub" | awk '/libpython.*not found/ {sub(/\.so.*/, "", $1); print $1}')"
  else
    echo "install_triton_peer.sh: $stub needs $(ldd "$stub" | grep libpython); install it (Debian: apt-get install libpython3.11)" >&2
    exit 1
  fi
fi
# That libpython is older than this interpreter's standard library (3.11.7), which the stub loads: its
# _thread.RLock has no _recursion_count, which 3.11.7's multiprocessing resource tracker calls, and the model
# fails to load ("'_thread.RLock' object has no attribute '_recursion_count'"). In such an interpreter only,
# give the tracker the pure-Python RLock, which has it, before anything starts a process.
cat > "$site/sitecustomize.py" <<'EOF'
"""Written by scripts/install_triton_peer.sh: PyTriton's Python-backend stub links an older libpython whose
_thread.RLock lacks _recursion_count, which this interpreter's multiprocessing resource tracker calls."""
import _thread

if not hasattr(_thread.RLock(), "_recursion_count"):
    import threading
    from multiprocessing import resource_tracker

    resource_tracker._resource_tracker._lock = threading._PyRLock()
EOF
.venv-triton/bin/python -c 'import pytriton, tritonclient.http.aio, openvino, PIL; print("triton peer environment ready")'
