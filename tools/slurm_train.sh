#!/usr/bin/env bash
# Training on a Slurm cluster (GPUS, GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS):
#   GPUS=16 tools/slurm_train.sh PARTITION JOB_NAME CONFIG [train.py arguments...]
exec "$(dirname "$0")/srun.sh" "$1" "$2" "$(dirname "$0")/train.py" "$3" "${@:4}"
