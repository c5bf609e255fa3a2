#!/usr/bin/env bash
# Data-parallel training on one node or many: runs MindSpore's own launcher, msrun, once per node with the
# trainer's msrun entry script. The Kubernetes training Jobs (deploy/training) run it; so can a bare machine.
#
#   train.sh [trainer arguments...]
#
# Environment (the defaults are one node with one worker):
#   NUM_NODES         nodes taking part (1)
#   WORKERS_PER_NODE  worker processes on this node, one per device (1); msrun's --local_worker_num
#   NODE_RANK         this node's rank, 0 .. NUM_NODES-1; default: JOB_COMPLETION_INDEX (which an Indexed Job
#                     sets in each pod), else 0
#   MASTER_ADDR       node 0's address, where msrun's scheduler listens (127.0.0.1; across nodes a DNS name that
#                     resolves to node 0, e.g. the headless Service's pod name)
#   MASTER_PORT       the scheduler's port (8118)
#   MSRUN_LOG_DIR     the workers' logs (./msrun-logs)
#   CLUSTER_TIME_OUT  seconds msrun waits for every node to join (600)
#   VITSERVE_TRAIN_DRY_RUN=1  print the msrun command line instead of running it
set -euo pipefail

num_nodes=${NUM_NODES:-1}
per_node=${WORKERS_PER_NODE:-1}
node_rank=${NODE_RANK:-${JOB_COMPLETION_INDEX:-0}}
master_addr=${MASTER_ADDR:-127.0.0.1}
master_port=${MASTER_PORT:-8118}

if ! [ "$node_rank" -ge 0 ] 2>/dev/null || [ "$node_rank" -ge "$num_nodes" ]; then
  echo "train.sh: NODE_RANK=$node_rank is not in 0..$((num_nodes - 1))" >&2
  exit 2
fi

# The entry script ships inside the installed package; ask Python where, rather than assume a source tree.
entry=$(python -c 'import importlib.util, sys
spec = importlib.util.find_spec("vitserve.training.distributed")
sys.exit("train.sh: vitserve.training.distributed is not installed") if spec is None else print(spec.origin)')

cmd=(msrun
  "--worker_num=$((num_nodes * per_node))"
  "--local_worker_num=$per_node"
  "--master_addr=$master_addr"
  "--master_port=$master_port"
  "--node_rank=$node_rank"
  "--log_dir=${MSRUN_LOG_DIR:-msrun-logs}"
  "--cluster_time_out=${CLUSTER_TIME_OUT:-600}"
  "--join=True"
  "$entry" "$@")

if [ "${VITSERVE_TRAIN_DRY_RUN:-0}" = 1 ]; then
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi
echo "train.sh: node $node_rank of $num_nodes, $per_node workers here, scheduler $master_addr:$master_port" >&2
exec "${cmd[@]}"
