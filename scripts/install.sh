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
  # The browser tests (tests/e2e/test_pages_browser.py) drive Debian's chromium: Playwright's own browser builds
  # are downloaded from outside the package registries. Installed once, as root; skipped when already there.
  # The hung-store test (tests/service/test_store_hang.py) mounts a FUSE filesystem that stops answering:
  # fuse3's fusermount3 and libfuse (mfusepy, from the dev extra, loads it with ctypes).
  if ! command -v chromium >/dev/null || ! command -v fusermount3 >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fuse3 libfuse3-3
    else
      echo "install.sh: no chromium or fuse3; the browser and hung-store tests need them (as root: apt-get install chromium fuse3)" >&2
    fi
  fi
  # Triton's client library, for the Open Inference Protocol tests, in an environment of its own: it pins
  # protobuf<7 and MindSpore 2.10 needs protobuf>=7.34, so they cannot share one (tests/e2e runs it as a
  # separate client process, which is how users meet it anyway).
  [ -x .venv-tritonclient/bin/python ] || "$python" -m venv .venv-tritonclient
  .venv-tritonclient/bin/pip install -q "tritonclient[http,grpc]>=2.40"
else
  .venv/bin/pip install -q -e . --config-settings editable_mode=strict
fi
