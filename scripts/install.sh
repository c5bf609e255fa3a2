#!/usr/bin/env bash
# Creates ./.venv (if missing) and installs vitserve into it.
#   scripts/install.sh          runtime only
#   scripts/install.sh dev      runtime + conversion (CPU torch) + CPU engines + test tools
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "${1:-}" = dev ]; then
  # torch first and pinned: an unpinned torch (asked for by timm) pulls gigabytes of CUDA wheels.
  .venv/bin/pip install -q "torch==2.13.0"
  .venv/bin/pip install -q -e ".[convert,dev]" --config-settings editable_mode=strict
else
  .venv/bin/pip install -q -e . --config-settings editable_mode=strict
fi
