#!/usr/bin/env bash
# CE's validation curves before the tuning stage (PREREGISTRATION.md,
# "Schedule"): seed 0 (a tuning seed; validation only), the study's run
# settings (no loader workers, one thread each), the 1000- and
# 2000-iteration poly schedules side by side on 2 cores. Run on 2026-12-06
# (with /work/study29 as the output folder) from the repository root.
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=work_dirs/camvid_ce_curve
mkdir -p "$out"
common="randomness.seed=0 train_dataloader.num_workers=0 train_dataloader.persistent_workers=False \
val_dataloader.num_workers=0 val_dataloader.persistent_workers=False \
test_dataloader.num_workers=0 test_dataloader.persistent_workers=False \
default_hooks.checkpoint.interval=-1 default_hooks.checkpoint.save_last=False"
CFG=configs/deeplabv3plus/deeplabv3plus_r18-cpu_1xb8-1000iter_camvid-half-128x128.py
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=.
# shellcheck disable=SC2086  # $common is a list of options
nice python tools/train.py $CFG --work-dir "$out/ce_curve_1000" \
  --cfg-options $common train_cfg.val_interval=125 default_hooks.logger.interval=50 \
  > "$out/ce_curve_1000.out" 2>&1 &
# shellcheck disable=SC2086
nice python tools/train.py $CFG --work-dir "$out/ce_curve_2000" \
  --cfg-options $common train_cfg.max_iters=2000 param_scheduler.0.end=2000 \
  train_cfg.val_interval=250 default_hooks.logger.interval=100 \
  > "$out/ce_curve_2000.out" 2>&1 &
wait
