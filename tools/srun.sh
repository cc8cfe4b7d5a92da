#!/usr/bin/env bash
# Shared by slurm_train.sh and slurm_test.sh: run SCRIPT as a Slurm job with
# GPUS tasks (GPUS_PER_NODE per node, CPUS_PER_TASK each; SRUN_ARGS extra).
#   tools/srun.sh PARTITION JOB_NAME SCRIPT [ARGS...]
set -euo pipefail
PARTITION=$1
JOB_NAME=$2
SCRIPT=$3
GPUS_PER_NODE=${GPUS_PER_NODE:-4}
PYTHONPATH="$(dirname "$0")/..${PYTHONPATH:+:$PYTHONPATH}" \
exec srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="${GPUS:-4}" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="${CPUS_PER_TASK:-5}" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS:-} \
    "${PYTHON:-python}" -u "$SCRIPT" "${@:4}" --launcher slurm
