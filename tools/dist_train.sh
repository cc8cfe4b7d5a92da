#!/usr/bin/env bash
# Multi-GPU (or multi-process CPU) training with torchrun:
#   tools/dist_train.sh CONFIG GPUS [train.py arguments...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
exec "$(dirname "$0")/torchrun.sh" "$2" "$(dirname "$0")/train.py" "$1" "${@:3}"
