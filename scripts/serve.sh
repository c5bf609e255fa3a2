#!/usr/bin/env bash
# Installs vitserve into ./.venv, trains the embedded default model into ./store the first time (a small ViT
# on scikit-learn's digits: a few minutes on 2 cores), then serves it on http://127.0.0.1:8000.
#   bash scripts/serve.sh [vitserve serve options, e.g. --port 9000]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export VITSERVE_STORE_ROOT=${VITSERVE_STORE_ROOT:-$PWD/store}
.venv/bin/vitserve bootstrap  # does nothing when the store already holds the default model
exec .venv/bin/vitserve serve "$@"
