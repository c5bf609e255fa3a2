#!/usr/bin/env bash
# Builds vitserve's runtime into one self-contained prefix (a virtual environment): the step the Dockerfile's
# build stage runs, and the same step on a bare machine or in CI, so the image is not the only way to get it.
#
#   deploy/scripts/build.sh PREFIX [SRC]
#
# PREFIX  where the environment goes (the image uses /opt/vitserve); created if missing.
# SRC     the source tree to install (default: this repository).
# Environment:
#   PYTHON            interpreter the environment is based on (default python3; a CANN image's Python 3.11)
#   VITSERVE_EXTRAS   optional extras to install, e.g. "convert" (torch, to import .pth checkpoints)
#
# Afterwards PREFIX/bin holds python, vitserve, dumb-init (PID 1 in the image) and PREFIX/scripts the start and
# training entry scripts.
set -euo pipefail

prefix=${1:?usage: build.sh PREFIX [SRC]}
src=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
python=${PYTHON:-python3}

"$python" -m venv "$prefix"
spec=$src
if [ -n "${VITSERVE_EXTRAS:-}" ]; then
  spec="${src}[${VITSERVE_EXTRAS}]"
fi
# A regular (not editable) install: the image must not depend on the source tree it was built from.
# dumb-init is pinned and comes from PyPI as a static binary, so the same init runs on any base image.
"$prefix/bin/python" -m pip install --no-cache-dir --disable-pip-version-check "$spec" "dumb-init==1.2.5.post1"

mkdir -p "$prefix/scripts"
install -m 0755 "$src/deploy/scripts/start.sh" "$src/deploy/scripts/train.sh" "$prefix/scripts/"

# Smoke check: the installed CLI answers and the service imports, from outside the source tree.
(cd / && "$prefix/bin/vitserve" --help >/dev/null && "$prefix/bin/python" -c "import vitserve.service.app, vitserve.training, vitserve.model_store, vitserve.vit")
echo "vitserve built into $prefix"
