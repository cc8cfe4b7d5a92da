#!/usr/bin/env bash
# One-call GPU check: build the CUDA extension, run `mmseg-arb check` (what
# a user runs), the GPU tests and the benchmarks, then the kernels under
# compute-sanitizer; everything goes to $OUT (default ./gpu_check_out):
# log.txt, check.txt, pytest.txt, bench_fp32.json, bench_bf16.json,
# bench_small.json, bench_odd.json, sanitizer.txt. It ends with one line per
# check (PASS / FAIL) and exits non-zero if any check failed.
#
# Needs only what a bare GPU machine with PyTorch has (nvcc, ninja, pytest,
# numpy). For mmseg's own CrossEntropyLoss as the loss baseline and for the
# DeepLabV3+ R-50 training iteration, first run tools/fetch_gpu_check_wheels.sh
# where PyPI is reachable and carry the resulting .whl/ along; they are
# installed here with --no-index. Without them the loss baseline is mmseg's
# CE computation and the training iteration is skipped.
#
# The whole run fits in 6 minutes: each step has its budget in seconds
# below (BUDGET_*, each overridable from the environment) and is stopped at
# it; a step that does not finish in its budget is a FAIL that says so, never
# a pass or a skip. The sanitizer runs come last (the results before them
# are in $OUT even if the device call's limit cuts them short) and each may
# also use what the steps before it left of their budgets, up to the
# 6-minute deadline. Each summary line gives the time its step took, to
# check the budgets against the card they ran on.
set -uo pipefail
cd "$(dirname "$0")/.."
BUDGET_SETUP=${BUDGET_SETUP:-15}     # carried wheels, the machine's lines
BUDGET_BUILD=${BUDGET_BUILD:-85}     # setup.py build_ext
BUDGET_CHECK=${BUDGET_CHECK:-30}     # mmseg-arb check
BUDGET_TESTS=${BUDGET_TESTS:-75}     # the GPU tests
BUDGET_BENCH=${BUDGET_BENCH:-17}     # each of the 4 benchmark runs
BUDGET_MEMCHECK=${BUDGET_MEMCHECK:-45}
BUDGET_RACECHECK=${BUDGET_RACECHECK:-25}
BUDGET_SYNCCHECK=${BUDGET_SYNCCHECK:-15}
BUDGET_TOTAL=$((BUDGET_SETUP + BUDGET_BUILD + BUDGET_CHECK + BUDGET_TESTS + 4 * BUDGET_BENCH +
                BUDGET_MEMCHECK + BUDGET_RACECHECK + BUDGET_SYNCCHECK))
script_start=$(date +%s)
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
  timeout "$BUDGET_SETUP" "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
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

echo "== budget: setup $BUDGET_SETUP s, build $BUDGET_BUILD s," \
  "mmseg-arb check $BUDGET_CHECK s, GPU tests $BUDGET_TESTS s, 4 benchmarks $BUDGET_BENCH s each," \
  "memcheck $BUDGET_MEMCHECK s, racecheck $BUDGET_RACECHECK s," \
  "synccheck $BUDGET_SYNCCHECK s: $BUDGET_TOTAL s in all"
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
# status RC LIMIT: a step's exit status (under `timeout LIMIT`) as $result,
# PASS or FAIL, and $reason, what the summary line says of a FAIL.
status() {
  result=FAIL
  case $1 in
    0) result=PASS reason="" ;;
    124|137) reason=": did not finish in its $2 s" ;;
    *) reason=": exit $1" ;;
  esac
}
finish() {
  echo "== summary"
  printf '%s\n' "${SUMMARY[@]}"
  exit "$failed"
}

echo "== build (setup.py build_ext --inplace, MMSEG_ARB_WITH_CUDA=1)"
start=$(date +%s)
MMSEG_ARB_WITH_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} timeout "$BUDGET_BUILD" \
  "$PY" setup.py -q build_ext --inplace
status $? "$BUDGET_BUILD"
if [ "$result" = FAIL ]; then
  record "build of the extension$reason" FAIL
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
step_start=$(date +%s)
timeout "$BUDGET_CHECK" "$PY" -m mmseg_arb.cli check 2>&1 | tee "$OUT/check.txt"
status "${PIPESTATUS[0]}" "$BUDGET_CHECK"
record "mmseg-arb check$reason: $(tail -n 1 "$OUT/check.txt") ($(( $(date +%s) - step_start )) s)" "$result"

echo "== GPU tests ($(( $(date +%s) - start )) s since the build started)"
# Only the tests that need the GPU: the compile, host-logic and build tests
# of tests/test_ops pass on CPU machines, and the build above covers them.
step_start=$(date +%s)
timeout "$BUDGET_TESTS" "$PY" -m pytest -q -p no:cacheprovider \
  tests/test_ops/test_cuda_ops.py tests/test_ops/test_cuda_ext_fallback.py \
  2>&1 | tee "$OUT/pytest.txt"
status "${PIPESTATUS[0]}" "$BUDGET_TESTS"
last=$(tail -n 1 "$OUT/pytest.txt")
record "GPU tests$reason${last:+: $last} ($(( $(date +%s) - step_start )) s)" "$result"

echo "== benchmarks ($(( $(date +%s) - start )) s)"
# bench NAME ARGS...: one benchmark run, its figures in $OUT/bench_NAME.json.
bench() {
  local name=$1 step_start
  shift
  step_start=$(date +%s)
  timeout "$BUDGET_BENCH" "$PY" tools/benchmark.py --device cuda \
    "${BENCH_FLAGS[@]}" "$@" --json "$OUT/bench_$name.json"
  status $? "$BUDGET_BENCH"
  record "benchmark $name ($*)$reason ($(( $(date +%s) - step_start )) s)" "$result"
}
bench fp32 --sections count loss train --shape 8 150 512 512 --dtype float32 --skip-naive
bench bf16 --sections loss --shape 8 150 512 512 --dtype bfloat16 --skip-naive
bench small --sections loss --shape 2 150 256 256 --dtype float32
# mmseg's 769x769 Cityscapes crops: H*W is odd, so every pixel takes the
# scalar (one pixel a thread) path; this row measures what that costs.
bench odd --sections loss --shape 8 19 769 769 --dtype float32 --skip-naive

echo "== compute-sanitizer: memcheck on each kernel and launch path, racecheck and synccheck on each kernel with shared memory ($(( $(date +%s) - start )) s)"
# No -x: a failing test must not keep the kernels of the tests after it
# out of memcheck. memcheck: every kernel on every launch path it has
# (label and float types, shared and global counts, vector and scalar
# loss, each reduction's kernels); left out are the repeats of those
# (the other reductions' loss tests), the compiled-loss tests (the same
# kernels; Inductor's compile under memcheck alone takes minutes) and the
# CUDA-graph tests (the sanitizer cannot follow a replay).
memcheck="count_kernel or prepare_kernel or (fused_loss_matches_cpu_path and (mean or none)) or fused_loss_backward or bad_gpu_labels"
# racecheck and synccheck on one case of each kernel that shares memory
# within a block: count, prepare (block sums and maxima), the loss's
# block and one-block reductions (weighted, mean).
shared="(count_kernel and int64 and 150) or (prepare_kernel and cumulative) or (cpu_loss_module and 0.5)"
sanitizer=$(command -v compute-sanitizer || ls "${CUDA_HOME:-/nonexistent}"/bin/compute-sanitizer 2>/dev/null)
if [ -n "$sanitizer" ]; then
  # Each run's deadline is the sum of the budgets up to its own from the
  # script's start: what the steps before it left is its, too.
  deadline=$((script_start + BUDGET_TOTAL - BUDGET_RACECHECK - BUDGET_SYNCCHECK))
  for tool in memcheck racecheck synccheck; do
    case $tool in
      memcheck) tests=$memcheck ;;
      racecheck) tests=$shared deadline=$((deadline + BUDGET_RACECHECK)) ;;
      synccheck) tests=$shared deadline=$((deadline + BUDGET_SYNCCHECK)) ;;
    esac
    step_start=$(date +%s)
    limit=$((deadline - step_start))
    own=BUDGET_${tool^^}
    [ "$limit" -lt "${!own}" ] && limit=${!own}
    timeout "$limit" "$sanitizer" --tool $tool --error-exitcode 9 \
      "$PY" -m pytest -q -p no:cacheprovider tests/test_ops/test_cuda_ops.py \
      -k "$tests" > "$OUT/sanitizer_$tool.txt" 2>&1
    status $? "$limit"
    tail -n 30 "$OUT/sanitizer_$tool.txt" | tee -a "$OUT/sanitizer.txt"
    record "compute-sanitizer $tool$reason ($(( $(date +%s) - step_start )) s)" "$result"
  done
else
  record "compute-sanitizer not found (on PATH or in CUDA_HOME/bin): \
memcheck, racecheck and synccheck did not run" FAIL
fi
echo "== done ($(( $(date +%s) - start )) s)"
finish
