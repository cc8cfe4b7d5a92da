#!/usr/bin/env bash
# Idempotent set-up of the development environment in $VENV (default .venv):
# torch, mmcv 2.1.0 with its compiled CPU ops, mmengine, mmsegmentation 1.2.2
# and mmseg_arb itself (editable). Safe to run again: a ready environment is
# detected in about a second.
#
# mmcv 2.1.0 ships only as a source archive, so the first run builds it
# against the installed torch (18 to 35 minutes on 2 cores) and keeps the
# wheel in $MMCV_WHEEL_DIR (default ~/.cache/mmseg_arb/wheels/<torch version>);
# later runs, in any clone on this machine, install that wheel in seconds.
#
# With --tests (make test), on a machine with nvcc but only a CPU torch, it
# also makes $CUDA_VENV (default .venv-cuda) with a CUDA build of torch, in
# which the tests compile and link the CUDA extension
# (tests/test_ops/test_extension_build.py; no GPU needed).
# MMSEG_ARB_CUDA_BUILD_CHECK=auto (default) does so only when pip finds that
# torch wheel in a local file, never by downloading it (several GB); =1
# downloads it if need be, =0 never makes it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
MMCV_VERSION=2.1.0
WHEEL_ROOT=${MMCV_WHEEL_DIR:-$HOME/.cache/mmseg_arb/wheels}
PY=$VENV/bin/python
CUDA_VENV=${CUDA_VENV:-$ROOT/.venv-cuda}
CUDA_TORCH_SPEC=${CUDA_TORCH_SPEC:-torch==2.14.1}
CUDA_BUILD_CHECK=${MMSEG_ARB_CUDA_BUILD_CHECK:-auto}
[ "${1:-}" = --tests ] || CUDA_BUILD_CHECK=0  # only the tests need it
# The lint set (make lint, run first by make test): flake8's rules through
# ruff, isort and yapf, pinned so that a new release cannot fail CI.
LINT_SPECS=(ruff==0.17.6 isort==9.0.2 yapf==0.43.0)

# pip install into the venv of the python given first, its noise filtered.
pip_install_with() {
  local python=$1
  shift
  "$python" -m pip install --disable-pip-version-check -q "$@" 2>&1 \
    | { grep -v -e "^WARNING: Location 'file:" -e 'dependency conflicts' || true; }
}
pip_install() { pip_install_with "$PY" "$@"; }

ready() {
  "$PY" - "$ROOT" <<'PYEOF' 2>/dev/null
import os, sys
import mmcv, mmcv.ops, mmengine, mmseg, pytest, pkg_resources  # noqa
import cityscapesscripts.helpers.labels  # noqa
import mmseg_arb
assert mmcv.__version__ == '2.1.0'
assert os.path.dirname(os.path.dirname(mmseg_arb.__file__)) == sys.argv[1]
PYEOF
}

# The CUDA build of torch for the extension build test, decided once per
# $VENV (the decision is remembered in $VENV/.cuda_build_check).
setup_cuda_build_check() {
  local decision=$VENV/.cuda_build_check
  [ "$CUDA_BUILD_CHECK" = 0 ] && return 0
  command -v nvcc >/dev/null || return 0
  if [ -f "$decision" ]; then  # decided before: only redo a lost venv
    grep -q '^made' "$decision" || [ "$CUDA_BUILD_CHECK" = 1 ] || return 0
    [ -x "$CUDA_VENV/bin/python" ] && return 0
  fi
  if "$PY" -c 'import sys, torch; sys.exit(torch.version.cuda is None)' 2>/dev/null; then
    echo "torch in $VENV is a CUDA build" > "$decision"  # the tests use it
    return 0
  fi
  if [ "$CUDA_BUILD_CHECK" = auto ] && ! torch_wheel_is_local; then
    echo "setup: no local CUDA build of torch ($CUDA_TORCH_SPEC): the extension" \
         "build test will skip (MMSEG_ARB_CUDA_BUILD_CHECK=1 downloads it)"
    echo "no local $CUDA_TORCH_SPEC" > "$decision"
    return 0
  fi
  echo "setup: making $CUDA_VENV with $CUDA_TORCH_SPEC (CUDA build) for the extension build test..."
  [ -x "$CUDA_VENV/bin/python" ] || python3 -m venv "$CUDA_VENV"
  pip_install_with "$CUDA_VENV/bin/python" "$CUDA_TORCH_SPEC" ninja numpy
  echo "made $CUDA_VENV" > "$decision"
}

# The lint tools, for the tests only, also into a venv made earlier.
setup_lint() {
  [ "${1:-}" = --tests ] || return 0
  "$PY" - "${LINT_SPECS[@]}" <<'PYEOF' 2>/dev/null && return 0
import sys
from importlib.metadata import version
sys.exit(any(version(n) != v for n, v in (s.split('==') for s in sys.argv[1:])))
PYEOF
  pip_install "${LINT_SPECS[@]}"
}

# Whether pip would take $CUDA_TORCH_SPEC's torch wheel from a local file
# (asked with --dry-run, which downloads no wheel).
torch_wheel_is_local() {
  local report status=0
  report=$(mktemp)
  "$PY" -m pip install --disable-pip-version-check -q --dry-run \
    --ignore-installed --report "$report" "$CUDA_TORCH_SPEC" >/dev/null 2>&1 || true
  "$PY" - "$report" <<'PYEOF' || status=1
import json, sys
try:
    report = json.load(open(sys.argv[1]))
except ValueError:
    sys.exit(1)
urls = [i['download_info']['url'] for i in report.get('install', [])
        if i['metadata']['name'].lower() == 'torch']
sys.exit(not (urls and urls[0].startswith('file:')))
PYEOF
  rm -f "$report"
  return "$status"
}

[ -x "$PY" ] || python3 -m venv "$VENV"
if ready; then
  setup_lint "${1:-}"
  setup_cuda_build_check
  exit 0
fi
start=$(date +%s)

# 1. torch first, alone: anything later that asks for torch finds it and
#    pulls no multi-GB CUDA build.
"$PY" -c 'import torch, numpy' 2>/dev/null || pip_install "$TORCH_SPEC" numpy
TORCH_VERSION=$("$PY" -c 'import torch; print(torch.__version__)')

# 2. mmcv with ops, from a cached wheel when there is one.
if ! "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null; then
  wheel_dir=$WHEEL_ROOT/torch-$TORCH_VERSION
  wheel=$(ls "$wheel_dir"/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$wheel" ]; then
    echo "setup: building mmcv $MMCV_VERSION with its CPU ops against torch $TORCH_VERSION" \
         "(once; 18 to 35 minutes on 2 cores)..."
    # mmcv's setup.py needs pkg_resources and torch at build time.
    pip_install 'setuptools<70' wheel ninja numpy packaging
    mkdir -p "$wheel_dir"
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      "$PY" -m pip wheel --disable-pip-version-check -q --no-deps \
      --no-build-isolation -w "$wheel_dir" "mmcv==$MMCV_VERSION"
    wheel=$(ls "$wheel_dir"/mmcv-$MMCV_VERSION-*.whl | head -n 1)
  fi
  pip_install --no-deps "$wheel"
fi

# 3. The rest. setuptools: torch asks for >= 77, and mmengine resolves
#    'mmseg::' configs with pkg_resources, which setuptools 81 removed.
pip_install 'setuptools>=77,<81' addict pyyaml yapf opencv-python Pillow \
  numpy packaging matplotlib prettytable scipy ftfy regex rich termcolor \
  tqdm pytest 'mmengine>=0.10.4,<0.11'
pip_install --no-deps 'mmsegmentation==1.2.2'
# Cityscapes evaluation / test-server format (mmseg's CityscapesMetric). Its
# 'typing' requirement is the Python 2 backport, hence --no-deps.
pip_install requests appdirs pyquaternion coloredlogs
pip_install --no-deps 'cityscapesscripts==2.3.0'
pip_install --no-deps --no-build-isolation -e "$ROOT"

ready || { echo "setup: the environment in $VENV is still incomplete" >&2; exit 1; }
setup_lint "${1:-}"
setup_cuda_build_check
echo "setup: environment ready in $VENV ($(( $(date +%s) - start )) s)"
