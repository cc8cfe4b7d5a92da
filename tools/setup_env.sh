#!/usr/bin/env bash
# Idempotent set-up of the development environment in $VENV (default .venv):
# torch, mmcv 2.1.0 with its compiled CPU ops, mmengine, mmsegmentation 1.2.2
# and mmseg_arb itself (editable). Safe to run again: a ready environment is
# detected in about a second.
#
# mmcv 2.1.0 ships only as a source archive, so the first run builds it
# against the installed torch (about 15 minutes on 2 cores) and keeps the
# wheel in $MMCV_WHEEL_DIR (default ~/.cache/mmseg_arb/wheels/<torch version>);
# later runs, in any clone on this machine, install that wheel in seconds.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
MMCV_VERSION=2.1.0
WHEEL_ROOT=${MMCV_WHEEL_DIR:-$HOME/.cache/mmseg_arb/wheels}
PY=$VENV/bin/python

pip_install() {
  "$PY" -m pip install --disable-pip-version-check -q "$@" 2>&1 \
    | { grep -v -e "^WARNING: Location 'file:" -e 'dependency conflicts' || true; }
}

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

[ -x "$PY" ] || python3 -m venv "$VENV"
if ready; then
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
         "(once; about 15 minutes on 2 cores)..."
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
echo "setup: environment ready in $VENV ($(( $(date +%s) - start )) s)"
