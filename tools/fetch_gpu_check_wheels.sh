#!/usr/bin/env bash
# Puts into .whl/ (git-ignored) the pure-Python wheels that tools/gpu_check.sh
# needs and a bare GPU machine with PyTorch lacks: mmengine, mmsegmentation,
# mmcv-lite (mmcv without compiled ops; the benchmark stubs mmcv.ops, which
# neither mmseg's CrossEntropyLoss nor DeepLabV3+ R-50 uses) and their small
# dependencies, about 5 MB. Run it where PyPI is reachable, then carry `.whl`
# to the GPU machine; gpu_check.sh installs them there with --no-index.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
rm -rf .whl && mkdir -p .whl
"$PY" -m pip download --disable-pip-version-check -q --no-deps \
  --only-binary=:all: -d .whl \
  mmcv-lite==2.1.0 mmengine==0.10.7 mmsegmentation==1.2.2 addict==2.4.0 \
  yapf==0.43.0 'platformdirs>=3.5.1' termcolor prettytable wcwidth ftfy \
  2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
ls .whl
du -sh .whl
