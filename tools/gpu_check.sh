#!/usr/bin/env bash
# One-call GPU check: build the CUDA extension, run `mmseg-arb check` (what
# a user runs), the GPU tests and the benchmarks, then the kernels under
# compute-sanitizer; everything goes to $OUT (default ./gpu_check_out):
# log.txt, check.txt, pytest.txt, bench_fp32.json, bench_bf16.json,
# bench_small.json, bench_odd.json, sanitizer.txt. It ends
# with one line per check (PASS / FAIL / SKIP) and exits non-zero if any
# check failed.
#
# Needs only what a bare GPU machine with PyTorch has (nvcc, ninja, pytest,
# numpy). For mmseg's own CrossEntropyLoss as the loss baseline and for the
# DeepLabV3+ R-50 training iteration, first run tools/fetch_gpu_check_wheels.sh
# where PyPI is reachable and carry the resulting .whl/ along; they are
# installed here with --no-index. Without them the loss baseline is mmseg's
# CE computation and the training iteration is skipped. Meant to pass whole
# in under 6 minutes on one GPU: the sanitizer runs are capped at 3
# minutes together and come last, so that the results before them are in
# $OUT even if the device call's limit cuts them short; each step prints
# its time, to check the rest of the budget on the card it runs on.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
# The checkout itself, not an installed copy, is what is checked.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
BENCH_FLAGS=()
if ls .whl/*.whl >/dev/null 2>&1; then
  SITE=${TMPDIR:-/tmp}/mmseg_arb_site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$SITE" .whl/*.whl
  # Use them only if mmseg then imports: a missing dependency of theirs must
  # not take the tests of the kernels down with it.
  if PYTHONPATH="$PYTHONPATH:$SITE" "$PY" -c 'import mmengine, mmseg.registry'; then
    export PYTHONPATH="$PYTHONPATH:$SITE"
    BENCH_FLAGS=(--stub-mmcv-ops)
  else
    echo "carried wheels not used: mmseg does not import with them"
  fi
fi

# torch takes CUDA_HOME from nvcc's folder; where nvcc is a wrapper outside
# the toolkit (as on this project's CPU machines), find the headers instead.
if [ -z "${CUDA_HOME:-}" ]; then
  nvcc_home=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
  for home in "$nvcc_home" /usr/local/cuda /usr/local/cuda-*; do
    if [ -f "$home/include/cuda_runtime.h" ]; then
      export CUDA_HOME=$home
      break
    fi
  done
fi

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'
nvcc --version | tail -n 2
echo "CUDA_HOME=${CUDA_HOME:-not found}"

SUMMARY=()
failed=0
# record NAME STATUS: one line of the closing summary.
record() {
  SUMMARY+=("$(printf '%-5s %s' "$2" "$1")")
  [ "$2" = FAIL ] && failed=1
  return 0
}
finish() {
  echo "== summary"
  printf '%s\n' "${SUMMARY[@]}"
  exit "$failed"
}

echo "== build (setup.py build_ext --inplace, MMSEG_ARB_WITH_CUDA=1)"
start=$(date +%s)
if ! MMSEG_ARB_WITH_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} "$PY" setup.py -q build_ext --inplace; then
  record "build of the extension" FAIL
  finish
fi
echo "built in $(( $(date +%s) - start )) s"
"$PY" -c 'import mmseg_arb._ext, torch
from mmseg_arb.ops.library import SCHEMAS, has_cuda_kernels
for name in SCHEMAS:
    print(getattr(torch.ops.mmseg_arb, name).default._schema)
assert has_cuda_kernels(), "the build registered no CUDA kernels"' \
  && record "build of the extension ($(( $(date +%s) - start )) s)" PASS \
  || { record "build of the extension: no CUDA kernels registered" FAIL; finish; }

echo "== mmseg-arb check, a user's check of the machine ($(( $(date +%s) - start )) s since the build started)"
"$PY" -m mmseg_arb.cli check 2>&1 | tee "$OUT/check.txt"
check_rc=${PIPESTATUS[0]}
record "mmseg-arb check: $(tail -n 1 "$OUT/check.txt")" "$([ "$check_rc" = 0 ] && echo PASS || echo FAIL)"

echo "== GPU tests ($(( $(date +%s) - start )) s since the build started)"
# Only the tests that need the GPU: the compile, host-logic and build tests
# of tests/test_ops pass on CPU machines, and the build above covers them.
"$PY" -m pytest -q -p no:cacheprovider tests/test_ops/test_cuda_ops.py \
  tests/test_ops/test_cuda_ext_fallback.py 2>&1 | tee "$OUT/pytest.txt"
test_rc=${PIPESTATUS[0]}
record "GPU tests: $(tail -n 1 "$OUT/pytest.txt")" "$([ "$test_rc" = 0 ] && echo PASS || echo FAIL)"

echo "== benchmarks ($(( $(date +%s) - start )) s)"
# bench NAME ARGS...: one benchmark run, its figures in $OUT/bench_NAME.json.
bench() {
  local name=$1
  shift
  if "$PY" tools/benchmark.py --device cuda "${BENCH_FLAGS[@]}" "$@" \
      --json "$OUT/bench_$name.json"; then
    record "benchmark $name ($*)" PASS
  else
    record "benchmark $name ($*)" FAIL
  fi
}
bench fp32 --sections count loss train --shape 8 150 512 512 --dtype float32 --skip-naive
bench bf16 --sections loss --shape 8 150 512 512 --dtype bfloat16 --skip-naive
bench small --sections loss --shape 2 150 256 256 --dtype float32
# mmseg's 769x769 Cityscapes crops: H*W is odd, so every pixel takes the
# scalar (one pixel a thread) path; this row measures what that costs.
bench odd --sections loss --shape 8 19 769 769 --dtype float32 --skip-naive

echo "== compute-sanitizer: memcheck on every kernel test, racecheck and synccheck on each kernel with shared memory ($(( $(date +%s) - start )) s)"
# No -x: a failing test must not keep the kernels of the tests after it
# out of memcheck. Left out: the compiled-loss tests (the same kernels as
# the eager ones; Inductor's compile under memcheck alone would take
# minutes) and the CUDA-graph test (the sanitizer cannot follow a replay).
if command -v compute-sanitizer >/dev/null; then
  # racecheck and synccheck on one case of each kernel that shares memory
  # within a block: count, prepare (block sums and maxima), the loss's
  # block and one-block reductions (weighted, mean).
  shared="(count_kernel and int64 and 150) or (prepare_kernel and cumulative) or (cpu_loss_module and 0.5)"
  for tool in memcheck racecheck synccheck; do
    case $tool in
      memcheck) limit=100 tests="not compiled and not whole_loss_call" ;;
      racecheck) limit=50 tests=$shared ;;
      synccheck) limit=25 tests=$shared ;;
    esac
    sanitizer_start=$(date +%s)
    timeout $limit compute-sanitizer --tool $tool --error-exitcode 9 \
      "$PY" -m pytest -q -p no:cacheprovider tests/test_ops/test_cuda_ops.py \
      -k "$tests" > "$OUT/sanitizer_$tool.txt" 2>&1
    rc=$?
    tail -n 30 "$OUT/sanitizer_$tool.txt" | tee -a "$OUT/sanitizer.txt"
    took=$(( $(date +%s) - sanitizer_start ))
    case $rc in
      0) record "compute-sanitizer $tool ($took s)" PASS ;;
      124) record "compute-sanitizer $tool: cut at ${limit} s" SKIP ;;
      *) record "compute-sanitizer $tool: exit $rc ($took s)" FAIL ;;
    esac
  done
else
  record "compute-sanitizer: not found" SKIP
fi
echo "== done ($(( $(date +%s) - start )) s)"
finish
