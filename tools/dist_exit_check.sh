#!/usr/bin/env bash
# Distributed CPU runs exit cleanly, again and again: RUNS runs in a row of
# tools/dist_train.sh with PROCESSES gloo processes (the demo's ARB config,
# 2 iterations, a validation and a checkpoint, on a small generated
# dataset), each of which must exit 0. Stops at the first that does not and
# prints the end of its log; else prints how many ran and how long.
#   tools/dist_exit_check.sh [RUNS (30)] [PROCESSES (2)]
# A slow check (15 to 60 s a run on 2 shared cores), kept out of the tests; see
# docs/upstream/gloo_abort_at_exit.md for the abort it guards against.
set -euo pipefail
RUNS=${1:-30}
PROCESSES=${2:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=1

"$PY" "$ROOT/tools/generate_dataset.py" ade20k "$WORK/data" \
  --num-classes 24 --num-train 8 --num-val 2 > /dev/null 2>&1
options=(train_cfg.max_iters=2 train_cfg.val_interval=2
         default_hooks.checkpoint.interval=2 default_hooks.logger.interval=1
         train_dataloader.batch_size=2 val_evaluator.class_counts=None)
for loader in train_dataloader val_dataloader test_dataloader; do
  options+=("$loader.dataset.data_root=$WORK/data" "$loader.num_workers=0"
            "$loader.persistent_workers=False")
done

start=$(date +%s)
for run in $(seq 1 "$RUNS"); do
  rm -rf "$WORK/work"
  if PORT=$((29500 + RANDOM % 1000)) PYTHON="$PY" bash "$ROOT/tools/dist_train.sh" \
      deeplabv3plus_r18-tiny_arb_1xb8-400iter_synthetic-ade20k-128x128 \
      "$PROCESSES" --work-dir "$WORK/work" --cfg-options "${options[@]}" \
      > "$WORK/log.txt" 2>&1; then
    rc=0
  else
    rc=$?
  fi
  # Exit 0 counts only after the whole run: 2 iterations, a checkpoint.
  if [ "$rc" != 0 ] || ! grep -q 'Saving checkpoint at 2 iterations' "$WORK/log.txt"; then
    tail -n 40 "$WORK/log.txt"
    echo "run $run of $RUNS: exit $rc, after $((run - 1)) clean runs in a row"
    exit 1
  fi
  echo "run $run of $RUNS: exit 0 ($(( $(date +%s) - start )) s so far)"
done
echo "$RUNS runs of $PROCESSES processes in a row exited 0 in $(( $(date +%s) - start )) s"
