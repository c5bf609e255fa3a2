#!/usr/bin/env bash
# Installs everything into ./.venv, then runs lint, type checks, the import contracts and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy -p vitserve
.venv/bin/lint-imports
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
# pytest exits 5 when it collected no tests: that is a failure of the suite, not a pass.
[ "$status" -eq 5 ] && echo "no tests were collected" >&2
exit "$status"
