#!/usr/bin/env bash
# The container's start command (the image runs it under dumb-init). Also what a bare machine runs to start the
# service the way the container does; CI runs it from a clean environment (tests/deploy/test_start_script.py).
#
#   start.sh [vitserve serve options...]
#
# 1. Loads the Ascend CANN environment when the image has one (ASCEND_ENV_SCRIPT, default the toolkit's set_env.sh).
# 2. When VITSERVE_BOOTSTRAP=1 and the store (VITSERVE_STORE_ROOT) holds no model, trains the embedded default
#    model into it (`vitserve bootstrap`, scikit-learn's digits; minutes on a CPU). Kubernetes leaves this off and
#    fills the shared store with a Job instead, so that replicas do not all train at once.
# 3. Replaces itself with `vitserve serve`: the server is then the init's direct child and receives SIGTERM
#    itself, so it drains (readiness false, in-flight work finished, exit 0) rather than being killed mid-request.
set -euo pipefail

log() { echo "start.sh: $*" >&2; }

ascend_env=${ASCEND_ENV_SCRIPT:-/usr/local/Ascend/ascend-toolkit/set_env.sh}
if [ -f "$ascend_env" ]; then
  log "loading the Ascend environment from $ascend_env"
  # CANN's script reads unset variables.
  set +u
  # shellcheck disable=SC1090
  . "$ascend_env"
  set -u
fi

store_root=${VITSERVE_STORE_ROOT:-./store}
export VITSERVE_STORE_ROOT=$store_root

# The store is the one place that knows its on-disk layout, so ask it rather than list directories here.
store_has_models() {
  python -c 'import os, sys
from vitserve.model_store import ModelStore
sys.exit(0 if ModelStore(os.environ["VITSERVE_STORE_ROOT"]).list_models() else 1)'
}

# Runs a command in the background and forwards SIGTERM/SIGINT to it: this shell is not the server, and without
# the trap a `docker stop` during a minutes-long bootstrap would wait for the kill timeout.
run_forwarding_signals() {
  local child status=0 stopped=0
  "$@" &
  child=$!
  trap 'stopped=1; kill -TERM "$child" 2>/dev/null || true' TERM INT
  wait "$child" || status=$?
  # A trapped signal interrupts `wait` before the child has exited: wait for it to finish.
  if kill -0 "$child" 2>/dev/null; then
    status=0
    wait "$child" || status=$?
  fi
  trap - TERM INT
  if [ "$stopped" = 1 ]; then
    log "stopped by a signal during: $*"
    exit 143
  fi
  return "$status"
}

if [ "${VITSERVE_BOOTSTRAP:-0}" = 1 ]; then
  mkdir -p "$store_root"
  if store_has_models; then
    log "store $store_root already holds models: no bootstrap"
  else
    log "store $store_root is empty: training the default digits model (vitserve bootstrap)"
    run_forwarding_signals vitserve bootstrap || { log "bootstrap failed"; exit 1; }
  fi
fi

log "starting vitserve serve (store $store_root)"
exec vitserve serve "$@"
