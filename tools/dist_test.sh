#!/usr/bin/env bash
# Multi-GPU testing with torchrun:
#   tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py arguments...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
exec "$(dirname "$0")/torchrun.sh" "$3" "$(dirname "$0")/test.py" "$1" "$2" "${@:4}"
