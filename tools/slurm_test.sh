#!/usr/bin/env bash
# Testing on a Slurm cluster (GPUS, GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS):
#   GPUS=4 tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py arguments...]
exec "$(dirname "$0")/srun.sh" "$1" "$2" "$(dirname "$0")/test.py" "$3" "$4" "${@:5}"
