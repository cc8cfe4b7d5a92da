#!/usr/bin/env bash
# One-call GPU check: build the CUDA extension, run the GPU tests, run the
# benchmarks, and write everything to $OUT (default ./gpu_check_out):
#   log.txt, pytest.txt, bench_fp32.json, bench_fp16.json
# Needs only what a bare GPU machine with PyTorch has (nvcc, ninja, pytest,
# numpy). mmseg is optional: without it the loss baseline is mmseg's CE
# computation and the training-iteration benchmark is skipped. Well under
# 10 minutes on one H100.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
# The checkout itself, not an installed copy, is what is checked.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'

echo "== build (setup.py build_ext --inplace, MMSEG_ARB_WITH_CUDA=1)"
start=$(date +%s)
MMSEG_ARB_WITH_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} "$PY" setup.py -q build_ext --inplace \
  || { echo "BUILD FAILED"; exit 1; }
echo "built in $(( $(date +%s) - start )) s"
"$PY" -c 'import mmseg_arb._ext, torch; print("ops:", [o for o in dir(torch.ops.mmseg_arb) if not o.startswith("_")])'

echo "== GPU tests"
"$PY" -m pytest -q -p no:cacheprovider tests/test_ops 2>&1 | tee "$OUT/pytest.txt"
test_rc=${PIPESTATUS[0]}

echo "== benchmarks"
"$PY" tools/benchmark.py --device cuda --sections count loss train \
  --shape 8 150 512 512 --dtype float32 --skip-naive --json "$OUT/bench_fp32.json"
"$PY" tools/benchmark.py --device cuda --sections loss \
  --shape 8 150 512 512 --dtype float16 --skip-naive --json "$OUT/bench_fp16.json"
"$PY" tools/benchmark.py --device cuda --sections loss \
  --shape 2 150 256 256 --dtype float32 --json "$OUT/bench_naive.json"
echo "== done (pytest exit $test_rc)"
exit "$test_rc"
