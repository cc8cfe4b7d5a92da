#!/usr/bin/env bash
# Shared by dist_train.sh and dist_test.sh: run SCRIPT on GPUS processes per
# node with torchrun. NNODES, NODE_RANK, MASTER_ADDR and PORT come from the
# environment for multi-node jobs; PYTHON picks the interpreter.
#   tools/torchrun.sh GPUS SCRIPT [ARGS...]
set -euo pipefail
GPUS=$1
SCRIPT=$2
PYTHONPATH="$(dirname "$0")/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" \
    --nproc_per_node="$GPUS" \
    "$SCRIPT" "${@:3}" --launcher pytorch
