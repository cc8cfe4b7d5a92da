#!/usr/bin/env bash
# Multi-GPU (or multi-process CPU) training with torchrun:
#   tools/dist_train.sh CONFIG GPUS [train.py arguments...]
# is `mmseg-arb train CONFIG --gpus GPUS ...` with this checkout's mmseg_arb.
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node;
# PYTHON picks the interpreter.
PYTHONPATH="$(dirname "$0")/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "${PYTHON:-python}" -m mmseg_arb.cli train "$1" --gpus "$2" "${@:3}"
