#!/usr/bin/env bash
# Multi-GPU testing with torchrun:
#   tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py arguments...]
# is `mmseg-arb test CONFIG CHECKPOINT --gpus GPUS ...` with this checkout's
# mmseg_arb. Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every
# node; PYTHON picks the interpreter.
PYTHONPATH="$(dirname "$0")/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "${PYTHON:-python}" -m mmseg_arb.cli test "$1" "$2" --gpus "$3" "${@:4}"
