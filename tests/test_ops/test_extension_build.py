"""The CUDA extension must compile, link and register its ops against a CUDA
build of torch, GPU or not.

``test_kernel_compiles`` checks the torch-free kernel unit alone; this also
covers ``binding.cpp``, ``setup.py``'s extension and the JIT path of
``mmseg_arb.ops.cuda_ext``, which a CPU-only torch cannot build. It needs
nvcc and a Python whose torch is a CUDA build: ``MMSEG_ARB_CUDA_TORCH_PYTHON``,
else this interpreter if its torch is one, else ``.venv-cuda`` (made by
``tools/setup_env.sh`` where such a torch installs from local files).
"""
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import textwrap
from typing import Optional

import pytest
import torch
from helpers import ROOT

# The ops' public contract, pinned.
OPS = {
    'class_histogram':
    'mmseg_arb::class_histogram(Tensor label, int num_classes, '
    'int ignore_index) -> Tensor',
    'prepare_counts':
    'mmseg_arb::prepare_counts(Tensor hist, Tensor(a!) counts, '
    'Tensor? class_weight, str count_mode, float momentum, '
    'float smoothing, float tau, float weight_power, '
    'float max_weight_ratio, bool update, bool avg_non_ignore, int ranks) '
    '-> Tensor',
    'arb_loss_forward':
    'mmseg_arb::arb_loss_forward(Tensor logits, Tensor label, Tensor shift, '
    'Tensor? class_weight, Tensor? weight, int ignore_index, '
    'str reduction, float loss_weight, bool avg_non_ignore, '
    'Tensor? denominator=None) -> (Tensor, Tensor, Tensor)',
    'arb_loss_backward':
    'mmseg_arb::arb_loss_backward(Tensor grad_loss, Tensor logits, '
    'Tensor label, Tensor shift, Tensor? class_weight, Tensor? weight, '
    'Tensor softmax_stats, Tensor scale, int ignore_index) -> Tensor',
}
# One architecture keeps the build short; test_kernel_compiles covers others.
ARCH = '9.0'


def _has_cuda_torch(python: str) -> bool:
    try:
        out = subprocess.run(
            [python, '-c', 'import torch; print(torch.version.cuda)'],
            capture_output=True,
            text=True,
            timeout=300)
    except OSError:
        return False
    return out.returncode == 0 and out.stdout.strip() not in ('', 'None')


def cuda_torch_python() -> Optional[str]:
    named = os.environ.get('MMSEG_ARB_CUDA_TORCH_PYTHON')
    if named:
        return named
    if torch.version.cuda is not None:
        return sys.executable
    local = osp.join(ROOT, '.venv-cuda', 'bin', 'python')
    if osp.exists(local) and _has_cuda_torch(local):
        return local
    return None


def cuda_home() -> Optional[str]:
    """A CUDA toolkit with its headers: ``CUDA_HOME``, else nvcc's, else
    ``/usr/local/cuda`` (nvcc on PATH may be a wrapper script outside it)."""
    nvcc = shutil.which('nvcc')
    candidates = [os.environ.get('CUDA_HOME')]
    if nvcc:
        candidates.append(osp.dirname(osp.dirname(osp.realpath(nvcc))))
    candidates.append('/usr/local/cuda')
    for home in candidates:
        if home and osp.exists(osp.join(home, 'include', 'cuda_runtime.h')):
            return home
    return None


PYTHON = cuda_torch_python()
CUDA_HOME = cuda_home()
pytestmark = [
    pytest.mark.slow,  # see tests/conftest.py
    pytest.mark.skipif(
        CUDA_HOME is None,
        reason='no CUDA toolkit with headers (set CUDA_HOME)'),
    pytest.mark.skipif(
        PYTHON is None,
        reason='no CUDA build of torch (set MMSEG_ARB_CUDA_TORCH_PYTHON or '
        'let tools/setup_env.sh make .venv-cuda)'),
]

# Run with the CUDA torch: define the ops (mmseg_arb.ops), load what was
# built, report the schemas, which ops gained a CUDA kernel from the build,
# and how a CPU tensor is refused (the kernels are CUDA-only by design).
PROBE = textwrap.dedent('''
    import json, sys, torch
    from mmseg_arb.ops.library import has_cuda_kernels
    before = has_cuda_kernels()
    {load}
    ns = torch.ops.mmseg_arb
    schemas = {{name: str(getattr(ns, name).default._schema)
               for name in {names!r}}}
    cuda = {{name: torch._C._dispatch_has_kernel_for_dispatch_key(
        'mmseg_arb::' + name, 'CUDA') for name in {names!r}}}
    try:
        ns.class_histogram(torch.zeros(4, dtype=torch.long), 3, 255)
        cpu_error = None
    except NotImplementedError as e:
        cpu_error = str(e).splitlines()[0]
    print(json.dumps(dict(schemas=schemas, cuda=cuda, before=before,
                          after=has_cuda_kernels(), cpu_error=cpu_error)))
''')


def build_env(tmp_path) -> dict:
    env = dict(os.environ)
    env.update(
        CUDA_HOME=CUDA_HOME,
        TORCH_CUDA_ARCH_LIST=ARCH,
        MAX_JOBS=str(os.cpu_count() or 2),
        TORCH_EXTENSIONS_DIR=str(tmp_path / 'torch_extensions'),
        PYTHONPATH=ROOT)
    return env


def probe(load: str, env: dict) -> dict:
    code = PROBE.format(load=load, names=sorted(OPS))
    result = subprocess.run([PYTHON, '-c', code],
                            capture_output=True,
                            text=True,
                            env=env,
                            timeout=1200,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def check_registered(report: dict) -> None:
    assert report['schemas'] == OPS
    assert report['before'] is False and report['after'] is True
    assert report['cuda'] == {name: True for name in OPS}
    assert report['cpu_error'] is not None
    assert "'CPU' backend" in report['cpu_error']


def test_build_without_gpu_gets_an_arch_list_torch_accepts(tmp_path):
    # Where no GPU is visible and TORCH_CUDA_ARCH_LIST is unset, torch's
    # own choice fails (an IndexError deep in cpp_extension); setup.py
    # chooses instead, and torch turns the choice into nvcc flags.
    env = build_env(tmp_path)
    del env['TORCH_CUDA_ARCH_LIST']
    env['CUDA_VISIBLE_DEVICES'] = ''
    code = textwrap.dedent('''
        import os, runpy, torch
        from torch.utils import cpp_extension
        runpy.run_path('setup.py', run_name='setup')[
            '_set_arch_list'](torch, cpp_extension.CUDA_HOME)
        flags = cpp_extension._get_cuda_arch_flags()
        print(os.environ['TORCH_CUDA_ARCH_LIST'], ' '.join(flags))
    ''')
    result = subprocess.run([PYTHON, '-c', code],
                            capture_output=True,
                            text=True,
                            env=env,
                            timeout=300,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    arch_list, *flags = result.stdout.splitlines()[-1].split()
    assert arch_list.endswith('+PTX') and '9.0' in arch_list.split(';')
    assert '-gencode=arch=compute_90,code=sm_90' in flags


def test_setup_py_builds_the_extension(tmp_path):
    env = build_env(tmp_path)
    env['MMSEG_ARB_WITH_CUDA'] = '1'
    lib = tmp_path / 'lib'
    # Build outside the checkout: nothing is left in the source tree.
    result = subprocess.run([
        PYTHON, 'setup.py', '-q', 'build_ext', '--build-lib',
        str(lib), '--build-temp',
        str(tmp_path / 'tmp')
    ],
                            capture_output=True,
                            text=True,
                            env=env,
                            timeout=1800,
                            cwd=ROOT)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    built = list((lib / 'mmseg_arb').glob('_ext*.so'))
    assert len(built) == 1, list(lib.rglob('*'))
    check_registered(probe(f'torch.ops.load_library({str(built[0])!r})', env))


def test_jit_build_registers_the_ops(tmp_path):
    env = build_env(tmp_path)
    report = probe(
        'from mmseg_arb.ops.cuda_ext import _jit_build; _jit_build()', env)
    check_registered(report)
    assert list((tmp_path / 'torch_extensions').rglob('mmseg_arb_cuda*.so'))
