"""The emulator tests catch the kernel bugs a review found them blind to.

Each mutation below is applied to a copy of the kernel sources, the host
emulator is built against it, and a test of ``test_emulated_kernels.py``
run on that build must fail; the same test on the same copy without the
mutation, built the same way, passes. Before the emulator ran a warp's
lanes together (and its warps in turns between barriers), the missing
leader check and the half-warp mask passed, and the missing trailing
barrier passed or failed by chance.
"""
import ctypes
import os.path as osp
import shutil

import pytest
import test_emulated_kernels as kernel_tests
import torch
from emulator_build import build_emulator

CSRC = kernel_tests.CSRC
# The tests that must catch them: a loss call of several blocks and its
# one-block reduction (block_sum), and a count grid with 8 shared
# histograms and a dominant class (warp aggregation).
REDUCTION = (kernel_tests.test_a_large_grid_strides, {})
COUNT = (kernel_tests.test_count_kernel,
         dict(dtype=torch.int32, num_classes=19, n=70001, offset=3))

# name: (file, text, its replacement, the test that must fail)
MUTATIONS = {
    # A warp reduction that stops at 16 lanes.
    'half-warp sum':
    ('arb_kernels.cu',
     '  for (int offset = kWarp / 2; offset > 0; offset /= 2) {\n'
     '    value += __shfl_down_sync',
     '  for (int offset = kWarp / 4; offset > 0; offset /= 2) {\n'
     '    value += __shfl_down_sync', REDUCTION),
    # The same reduction over a mask of half the warp.
    'half-warp mask':
    ('arb_kernels.cu',
     'value += __shfl_down_sync(0xffffffffu, value, offset);',
     'value += __shfl_down_sync(0x0000ffffu, value, offset);', REDUCTION),
    # block_sum without its trailing barrier: the next call's writes race
    # thread 0's reads.
    'no trailing barrier':
    ('arb_kernels.cu', '  }\n  __syncthreads();\n  return total;\n',
     '  }\n  return total;\n', REDUCTION),
    # Every lane of a warp's group adds the group's count, not its leader
    # alone.
    'no aggregation leader':
    ('arb_kernel_logic.cuh',
     'if (bin < 0 || block.lane() != first_lane(peers)) return;',
     'if (bin < 0) return;', COUNT),
    # The shared histograms summed while other warps still add to them.
    'no barrier before the replicas are summed':
    ('arb_kernel_logic.cuh',
     '  if (kShared) {\n    block.sync();\n    for (int b',
     '  if (kShared) {\n    for (int b', COUNT),
}

pytestmark = pytest.mark.skipif(
    shutil.which('nvcc') is None, reason='nvcc not on PATH')


def emulator(folder, mutation=None):
    """The emulator built from a copy of the kernel sources in ``folder``,
    with ``mutation`` applied, loaded as the tests load theirs."""
    shutil.copytree(CSRC, folder)
    if mutation is not None:
        name, text, replacement, _ = MUTATIONS[mutation]
        path = osp.join(folder, name)
        with open(path) as f:
            source = f.read()
        # Exactly once: a kernel rewritten since must fail here, not pass
        # unmutated.
        assert source.count(text) == 1, f'{mutation}: not in {name} once'
        with open(path, 'w') as f:
            f.write(source.replace(text, replacement))
    lib = ctypes.CDLL(build_emulator(str(folder)))
    lib.emu_configure(kernel_tests.BLOCKS_PER_SM, 0)
    return lib


@pytest.mark.parametrize('mutation', list(MUTATIONS))
def test_the_emulator_tests_catch_the_mutant(tmp_path, mutation):
    test, params = MUTATIONS[mutation][3]
    with pytest.raises(AssertionError):
        test(emulator(tmp_path / 'mutant', mutation), **params)
    test(emulator(tmp_path / 'control'), **params)
